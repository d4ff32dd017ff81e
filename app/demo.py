"""The embedded demo: a small CNN and scikit-learn's handwritten digits (shipped, no download)."""
from __future__ import annotations

import numpy as np

from edgeslim.core.errors import MissingModule

INSTALL = "pip install 'edgeslim[demo]'"


def digits_cnn(width: int = 64):
    """Four 3x3 convolutions and a two-layer head for 1x8x8 digit images (2x2 after two poolings);
    about 1.1M parameters."""
    from torch import nn

    w = width

    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

    class DigitsCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(*block(1, w), *block(w, 2 * w), nn.MaxPool2d(2),
                                          *block(2 * w, 4 * w), nn.MaxPool2d(2), *block(4 * w, 4 * w))
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * 4, 128), nn.ReLU(), nn.Dropout(0.2),
                                      nn.Linear(128, 10))

        def forward(self, x):
            return self.head(self.features(x))

    return DigitsCNN()


def digits_arrays(seed: int = 0):
    """(x_train, y_train, x_val, y_val): 1x8x8 float32 images in [0, 1], stratified 80/20."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ModuleNotFoundError as exc:  # scikit-learn, or a library it needs
        raise MissingModule(exc.name, INSTALL) from None

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int64)
    x_train, x_val, y_train, y_val = train_test_split(images, labels, test_size=0.2, random_state=seed,
                                                      stratify=labels)
    return x_train, y_train, x_val, y_val


def batches(x, y, size: int):
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(x), size)]


def digits_data(batch_size: int = 64):
    """The data spec of the demo: numpy batches, so the validation side needs no torch."""
    x_train, y_train, x_val, y_val = digits_arrays()
    return {"train": batches(x_train, y_train, batch_size), "val": batches(x_val, y_val, 128)}
