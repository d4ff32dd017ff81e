"""`edgeslim run`: a recipe end to end: (train,) build every candidate, validate, report."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

from edgeslim.core.outputs import cache_dir
from edgeslim.core.progress import Timer, log


def _source_digest(spec: str) -> str:
    """The model's source text, so that the cache forgets a model whose code changed."""
    target = spec.rpartition(":")[0]
    path = target if target.endswith(".py") else getattr(importlib.util.find_spec(target), "origin", None)
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path and Path(path).is_file() else target


def trained_model(recipe, data, metric):
    """The recipe's model, trained per `recipe.train` once and then read from the cache."""
    import torch

    from edgeslim.compress import distributed
    from edgeslim.compress.train import FitOptions, fit
    from edgeslim.core.model_io import load_model, load_weights

    model = load_model(recipe.model, recipe.weights)
    if recipe.train is None:
        return model
    key = hashlib.sha256(json.dumps({"model": recipe.model, "source": _source_digest(recipe.model),
                                     "weights": recipe.weights, "data": recipe.data,
                                     "train": {k: v for k, v in recipe.to_dict()["train"].items() if k != "device"},
                                     "torch": torch.__version__},
                                    sort_keys=True).encode()).hexdigest()[:16]
    cached = cache_dir() / f"trained-{key}.pt"
    if cached.is_file():
        log(f"using the trained model cached at {cached}")
        load_weights(model, cached)
        return model.eval()
    train = data.need("train", "training")
    options = FitOptions(epochs=recipe.train.epochs, lr=recipe.train.lr,
                         weight_decay=recipe.train.weight_decay, seed=recipe.train.seed,
                         device=recipe.train.device)
    fit(model, train, options, label="train", val=data.val, metric=metric)
    if not distributed.is_writer():
        return model.eval()  # torchrun: rank 0 keeps the cache
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".tmp{os.getpid()}")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, cached)
    return model.eval()


def run_recipe(recipe, out: Path, force: bool = False) -> dict | None:
    """Build each candidate under out/<name>, validate them all, write out/report.json and .md.

    `out` must be new, or hold only what an earlier run wrote (bundles and reports) unless `force`:
    then the run writes beside the user's files and removes none of them. Under torchrun the ranks
    other than 0 train beside rank 0, write nothing and return None.
    """
    from edgeslim.compress.distributed import is_writer
    from edgeslim.core.outputs import check_run_output, claimed

    if not is_writer():
        return _run_recipe(recipe, Path(out), force)
    check_run_output(out, force)
    with claimed(out):
        return _run_recipe(recipe, Path(out), force)


def _run_recipe(recipe, out: Path, force: bool) -> dict:
    from edgeslim.build import build_bundle
    from edgeslim.compress import check_order, distributed
    from edgeslim.core.model_io import state_digest
    from edgeslim.core.outputs import write_document
    from edgeslim.core.specs import load_data, load_metric
    from edgeslim.devices.runner import BenchConfig
    from edgeslim.devices.targets import get_target
    from edgeslim.export.onnx_export import ExportConfig
    from edgeslim.report.gates import GateConfig, apply_gates
    from edgeslim.report.markdown import render_markdown
    from edgeslim.report.provenance import source_model
    from edgeslim.validate import validate_bundles

    for device in recipe.devices:
        get_target(device)  # fail on an unknown or unavailable device before hours of work
    for candidate in recipe.candidates:
        check_order(candidate.steps)
    bench = BenchConfig(**recipe.bench)
    gates = GateConfig(**recipe.gates)
    export = ExportConfig(**recipe.export)
    with Timer() as timer:
        data = load_data(recipe.data)
        metric = load_metric(recipe.metric)
        model = trained_model(recipe, data, metric)
        torch_cache: dict = {}
        bundles = []
        source = source_model(model, recipe.model, recipe.weights, recipe.data, data.val, recipe.train is not None)
        for index, candidate in enumerate(recipe.candidates, 1):
            log(f"[{index}/{len(recipe.candidates)}] building {candidate.name}")
            build_bundle(model, candidate.steps, data, out / candidate.name, candidate.name, metric, export,
                         torch_cache, force, device=recipe.devices[0], source=source)
            bundles.append(str(out / candidate.name))
        if not distributed.is_writer():
            return None  # torchrun: this rank trained beside rank 0, which validates and reports
        specs = {"model": recipe.model, "weights": recipe.weights, "weights_sha256": state_digest(model),
                 "data": recipe.data, "data_sha256": source["data_sha256"]}  # the val split, hashed once
        report = validate_bundles(bundles, data, recipe.devices, metric, recipe.metric,
                                  recipe.baseline or recipe.candidates[0].name, bench, "run", specs)
    report["recipe"] = recipe.to_dict()
    report["settings"]["wall_s"] = round(timer.seconds, 1)
    if recipe.gates:
        apply_gates(report, gates)
    write_document(out / "report.json", report, "json", force)
    write_document(out / "report.md", render_markdown(report), "markdown", force)
    log(f"wrote {out / 'report.json'} and {out / 'report.md'} ({timer.seconds:.0f} s)")
    return report
