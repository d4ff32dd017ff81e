"""A MobileNetV3-style model written as a user would write it (plain torch, no torchvision), as edgeslim specs.

Depthwise convolutions, squeeze-excitation gated by hardsigmoid, hardswish and ReLU, residual
additions; 37 convolutions, about 0.75M parameters. Data: scikit-learn's handwritten digits
(`edgeslim.demo.digits_arrays`), upsampled from 8x8 to 32x32, so that the network's three stride-2
stages have something to reduce. It is trained by the bench (part `peers`) before it is compared.

    edgeslim compress --model bench/models/mobilenetv3.py:mobilenetv3 --weights <trained .pt> \
        --data bench/models/mobilenetv3.py:digits32 --quantize int8 --out mnv3-int8
"""
from __future__ import annotations

import numpy as np
from torch import nn

SIZE = 32


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        middle = max(8, channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, middle, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(middle, channels, 1)
        self.gate = nn.Hardsigmoid(inplace=True)

    def forward(self, x):
        return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))


def conv_bn_act(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act=nn.Hardswish):
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, kernel: int, expanded: int, cout: int, se: bool, act, stride: int):
        super().__init__()
        self.use_residual = stride == 1 and cin == cout
        self.expand = conv_bn_act(cin, expanded, 1, act=act)
        self.depthwise = conv_bn_act(expanded, expanded, kernel, stride, groups=expanded, act=act)
        self.se = SqueezeExcite(expanded) if se else nn.Identity()
        self.project = conv_bn_act(expanded, cout, 1, act=None)

    def forward(self, x):
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + y if self.use_residual else y


RE, HS = nn.ReLU, nn.Hardswish
# input channels, kernel, expanded channels, output channels, squeeze-excitation, activation, stride
CONFIG = [(16, 3, 64, 24, True, RE, 2),
          (24, 3, 88, 24, True, RE, 1),
          (24, 5, 96, 40, True, HS, 2),
          (40, 5, 240, 40, True, HS, 1),
          (40, 5, 120, 48, True, HS, 1),
          (48, 5, 144, 48, True, HS, 1),
          (48, 5, 288, 96, True, HS, 2)]


class MobileNetV3Style(nn.Module):
    def __init__(self, num_classes: int = 10, last: int = 960, hidden: int = 448):
        super().__init__()
        self.stem = conv_bn_act(1, 16, 3, 1)
        self.blocks = nn.Sequential(*[InvertedResidual(*row) for row in CONFIG])
        self.last = conv_bn_act(CONFIG[-1][3], last, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(last, hidden), nn.Hardswish(inplace=True), nn.Dropout(0.2),
                                        nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(self.pool(self.last(self.blocks(self.stem(x)))).flatten(1))


def mobilenetv3():
    return MobileNetV3Style()


def _bilinear_matrix(source: int, target: int) -> np.ndarray:
    """[target, source] weights of 1-D bilinear resizing, as torch's interpolate(align_corners=False)."""
    position = np.maximum((np.arange(target) + 0.5) * source / target - 0.5, 0.0)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, source - 1)
    weight = position - low
    matrix = np.zeros((target, source), np.float64)
    matrix[np.arange(target), low] += 1.0 - weight
    matrix[np.arange(target), high] += weight
    return matrix


def upsample(images: np.ndarray, size: int = SIZE) -> np.ndarray:
    """[N, 1, h, w] -> [N, 1, size, size], bilinear (the same values as torch's F.interpolate)."""
    rows, cols = _bilinear_matrix(images.shape[2], size), _bilinear_matrix(images.shape[3], size)
    return np.einsum("ih,nchw,jw->ncij", rows, images.astype(np.float64), cols).astype(np.float32)


def digits32(train_batch: int = 64, val_batch: int = 120):
    """The digits, stratified 80/20 as the demo splits them, at 1x32x32 in [0, 1]."""
    from edgeslim.demo import batches, digits_arrays

    x_train, y_train, x_val, y_val = digits_arrays()
    return {"train": batches(upsample(x_train), y_train, train_batch),
            "val": batches(upsample(x_val), y_val, val_batch)}
