"""A first check of issue 10 on all-MiniLM-L6-v2: an fp32 bundle against a compressed one, timed in turns
in one process at batch 1, sequence 64, 2 threads; then the compressed one at sequence lengths up to 512.
Not yet a `make bench` part.

    .venv/bin/python bench/minilm_check.py FP32_BUNDLE COMPRESSED_BUNDLE
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from edgeslim.sdk import load
from edgeslim.sdk.bundle import bundle_size, read_manifest
from edgeslim.sdk.stats import alternating_p50

sys.path.insert(0, str(Path(__file__).parent / "models"))


def main(fp32: str, compressed: str) -> None:
    import minilm

    inputs = {name: np.asarray(value) for name, value in minilm.texts(batch_size=1, val_count=64)["val"][0][0].items()}
    bundles = {"fp32": fp32, "compressed": compressed}
    models = {name: load(path, threads=2) for name, path in bundles.items()}
    sizes = {name: bundle_size(path, read_manifest(path)) for name, path in bundles.items()}
    p50 = alternating_p50({name: (lambda model=model: model.predict(inputs)) for name, model in models.items()},
                          rounds=40, runs=10)
    for name in bundles:
        print(f"{name}: p50 {p50[name]:.2f} ms, {sizes[name] / 1e6:.1f} MB, {p50['fp32'] / p50[name]:.2f}x faster, "
              f"{sizes['fp32'] / sizes[name]:.2f}x smaller")
    for length in (8, 128, 512):
        ones = np.ones((1, length), dtype=np.int64)
        shape = models["compressed"].predict({"input_ids": ones, "attention_mask": ones}).shape
        print(f"sequence {length}: output {shape}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
