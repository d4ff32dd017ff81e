"""A ResNet-18 (11.2M parameters, ImageNet layout) in plain torch, on digits upsampled to 64x64.

Used for the GPU evidence in BENCHMARKS.md: trained on the GPU server through a recipe, then
validated on its CPU and CUDA. PyPI's torchvision does not import beside torch 2.13 here, so the
network is written out.
"""
import numpy as np
from torch import nn

from edgeslim.demo import batches, digits_arrays


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18(nn.Module):
    def __init__(self, classes=10, channels=1):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        widths, layers, cin = (64, 128, 256, 512), [], 64
        for index, width in enumerate(widths):
            stride = 1 if index == 0 else 2
            layers += [BasicBlock(cin, width, stride), BasicBlock(width, width, 1)]
            cin = width
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


def resnet18():
    return ResNet18()


def _upsample(images, size=64):
    factor = size // images.shape[-1]
    return np.ascontiguousarray(images.repeat(factor, axis=-1).repeat(factor, axis=-2))


def digits64():
    x_train, y_train, x_val, y_val = digits_arrays()
    return {"train": batches(_upsample(x_train), y_train, 64), "val": batches(_upsample(x_val), y_val, 120)}
