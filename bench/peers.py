"""Part `peers` of `make bench`: edgeslim's INT8 beside onnxruntime's and NNCF's, on the same models and data.

For each model (the test suite's SmallCNN, MobileNet-style and transformer, the MobileNetV3-style
model of bench/models/mobilenetv3.py, and all-MiniLM-L6-v2 with its real weights):

1. Train it (not MiniLM) with edgeslim.compress.train.fit, as tests/conftest.py does, with the epochs
   and learning rates of tests/helpers.py; the weights are cached under the bench's cache folder.
2. Build edgeslim's bundles with the CLI, each in a child process: `export` (fp32), `compress
   --quantize int8` (INT8, default settings), `compress --prune 0.5 --distill --epochs 6` (pruned-kd)
   and the same with `--quantize int8` (pruned-kd-int8). A build that fails is recorded in one line.
3. Quantize the fp32 bundle's model.onnx with the peers, on the same calibration samples edgeslim
   uses (the first 300 samples of `train`): onnxruntime's quantize_static (QDQ, per_channel,
   reduce_range, after quant_pre_process; activation and weight types left at their defaults),
   quantize_dynamic (defaults) and quantize_dynamic(per_channel=True, reduce_range=True), and NNCF
   with its defaults (`nncf.quantize(model, nncf.Dataset(samples))`, plus model_type=TRANSFORMER on
   the transformers). Each result is wrapped into an edgeslim bundle (model.onnx + manifest), so
   that every figure below comes through the same SDK.
4. Accuracy of every bundle through the SDK on the val split (top1, or MiniLM's `cosine`), and which
   of its convolutions and matmuls onnxruntime runs as integer kernels.
5. Latency: all bundles of one model loaded in one process (SDK, device `cpu`, default threads,
   batch 1, one real val sample), timed in turns: after warm-up, ROUNDS rounds, each in a fresh random order,
   RUNS consecutive calls of each bundle per round; p50 over all runs of a bundle.

BENCH_QUICK=1 shrinks everything (training, distillation, calibration, timing) to check that the
part runs; its figures mean nothing. BENCH_PEERS_MODELS=mobilenet,minilm picks models by key.

Run alone as `python bench/run_bench.py peers` (or `make bench PARTS=peers`); this file's own
command line is the children's entry point.
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ZOO = REPO / "tests" / "fixtures" / "zoo.py"
MNV3 = HERE / "models" / "mobilenetv3.py"
MINILM = HERE / "models" / "minilm.py"
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")


def _architectures() -> dict:
    """tests/helpers.py's ARCHITECTURES: the epochs and learning rates the test suite trains with."""
    spec = importlib.util.spec_from_file_location("_edgeslim_test_helpers", REPO / "tests" / "helpers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ARCHITECTURES


@dataclass(frozen=True)
class PeerModel:
    key: str                    # folder name under bench-out/peers, and BENCH_PEERS_MODELS's name
    label: str                  # the name in tables and checks
    model: str                  # edgeslim specs
    data: str
    metric: str = "top1"
    train: tuple | None = None  # (epochs, lr); None: the model comes with its weights
    transformer: bool = False   # NNCF's defaults get model_type=TRANSFORMER


def models() -> list[PeerModel]:
    arch = {factory: (epochs, lr) for factory, epochs, lr in _architectures().values()}
    return [
        PeerModel("small_cnn", "SmallCNN", f"{ZOO}:small_cnn", f"{ZOO}:digits", train=arch["small_cnn"]),
        PeerModel("mobilenet", "MobileNet-style", f"{ZOO}:mobilenet", f"{ZOO}:digits", train=arch["mobilenet"]),
        PeerModel("transformer", "transformer", f"{ZOO}:transformer", f"{ZOO}:digits", train=arch["transformer"],
                  transformer=True),
        PeerModel("mobilenetv3", "MobileNetV3-style", f"{MNV3}:mobilenetv3", f"{MNV3}:digits32", train=(8, 3e-3)),
        PeerModel("minilm", "all-MiniLM-L6-v2", f"{MINILM}:encoder", f"{MINILM}:short_texts", metric=f"{MINILM}:cosine",
                  transformer=True),
    ]


def settings() -> dict:
    full = {"calibration_samples": 300, "distill_epochs": 6, "prune": 0.5, "rounds": 40, "runs": 20, "warmup": 20,
            "train_epochs": None}
    quick = {"calibration_samples": 64, "distill_epochs": 1, "prune": 0.5, "rounds": 3, "runs": 10, "warmup": 5,
             "train_epochs": 2}
    return {**(quick if QUICK else full), "quick": QUICK}


# The order of the table; edgeslim's first, then the peers (see PEERS).
EDGESLIM_BUNDLES = ("fp32", "int8", "pruned-kd", "pruned-kd-int8")
PEERS = {
    "ort-static": "onnxruntime quantize_static: QDQ, per_channel, reduce_range, uint8 activations, "
                  "after quant_pre_process",
    "ort-dynamic": "onnxruntime quantize_dynamic, defaults",
    "ort-dynamic-pc": "onnxruntime quantize_dynamic(per_channel=True, reduce_range=True)",
    "nncf-default": "nncf.quantize(model, nncf.Dataset(samples)) (model_type=TRANSFORMER on transformers)",
}


def _one_line(text: str) -> str:
    """The line of a child's output that says why it failed."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    found = next((line for line in reversed(lines) if line.startswith("edgeslim: ")), None) or \
        next((line for line in reversed(lines) if "Error" in line or "error" in line), None) or \
        (lines[-1] if lines else "no output")
    found = found.removeprefix("edgeslim: ").replace(" (rerun with --debug for the traceback and report it)", "")
    return found[:300]


def _child(args: list, log: Path, env: dict | None = None, timeout: float = 3600) -> tuple[float, int, str]:
    """A child process; its output goes to `log`. Returns (seconds, exit code, output)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=env,
                              timeout=timeout)
        code, text = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        code, text = 124, f"{exc.stdout or ''}{exc.stderr or ''}\ntimed out after {timeout:.0f} s"
    log.write_text(text if isinstance(text, str) else text.decode(errors="replace"))
    return time.perf_counter() - started, code, text


def _source_digest(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


def trained_weights(spec: PeerModel, cache: Path, config: dict, logs: Path) -> Path:
    """The model trained once on its `train` split (as tests/conftest.py trains); cached."""
    from importlib.metadata import version

    epochs, lr = spec.train
    epochs = config["train_epochs"] or epochs
    files = {Path(spec.model.rpartition(":")[0]), Path(spec.data.rpartition(":")[0])}
    key = hashlib.sha256(json.dumps({"model": spec.model, "data": spec.data, "epochs": epochs, "lr": lr,
                                     "source": _source_digest(*sorted(files)), "torch": version("torch")},
                                    sort_keys=True).encode()).hexdigest()[:16]
    weights = cache / f"peers-{spec.key}-{key}.pt"
    if weights.is_file():
        print(f"bench: peers {spec.label}: trained weights from the cache ({weights})", flush=True)
        return weights
    seconds, code, text = _child([__file__, "train", spec.key, weights, "--epochs", epochs, "--lr", lr],
                                 logs / "train.log")
    if code != 0 or not weights.is_file():
        raise RuntimeError(f"training failed: {_one_line(text)}")
    print(f"bench: peers {spec.label}: trained {epochs} epochs at lr {lr:g} ({seconds:.0f} s)", flush=True)
    return weights


def build_edgeslim(spec: PeerModel, folder: Path, weights: Path | None, cache: Path, config: dict) -> dict:
    """edgeslim's four bundles through its CLI; {name: {seconds, exit[, failed]}}."""
    env = dict(os.environ, EDGESLIM_CACHE=str(cache))
    common = ["--model", spec.model, *(["--weights", weights] if weights else []), "--data", spec.data,
              "--metric", spec.metric]
    calibration = ["--calibration-samples", config["calibration_samples"]]
    prune = ["--prune", config["prune"], "--distill", "--epochs", config["distill_epochs"]]
    commands = {"fp32": ["export", *common],
                "int8": ["compress", *common, "--quantize", "int8", *calibration],
                "pruned-kd": ["compress", *common, *prune],
                "pruned-kd-int8": ["compress", *common, *prune, "--quantize", "int8", *calibration]}
    built = {}
    for name, args in commands.items():
        if name == "pruned-kd-int8" and "failed" in built.get("pruned-kd", {}):
            built[name] = {"failed": "not tried, as pruned-kd failed"}
            print(f"bench: peers {spec.label}: {name} {built[name]['failed']}", flush=True)
            continue
        command = ["-m", "edgeslim", "--quiet", *args, "--out", folder / name]
        seconds, code, text = _child(command, folder / "logs" / f"{name}.log", env)
        built[name] = {"seconds": round(seconds, 1), "exit": code,
                       "command": "edgeslim " + " ".join(map(str, args)).replace(str(REPO) + "/", "")}
        if not (folder / name / "manifest.json").is_file():
            built[name]["failed"] = _one_line(text)
        state = f"failed: {built[name]['failed']}" if "failed" in built[name] else "built"
        print(f"bench: peers {spec.label}: {name} {state} ({seconds:.0f} s)", flush=True)
        if name == "fp32" and "failed" in built[name]:
            break
    return built


def bench(out: Path, cache: Path) -> dict:
    """The whole part: every model built, measured and compared; {"settings", "models", "checks"}."""
    config = settings()
    chosen = [key.strip() for key in os.environ.get("BENCH_PEERS_MODELS", "").split(",") if key.strip()]
    all_models = models()
    unknown = set(chosen) - {m.key for m in all_models}
    if unknown:
        raise SystemExit(f"bench: BENCH_PEERS_MODELS names unknown model(s) {sorted(unknown)}; "
                         f"choose from {', '.join(m.key for m in all_models)}")
    results = {"settings": {**config, "cpu_features": cpu_features(), "peers": PEERS,
                            "timing": "SDK, device cpu, default threads, batch 1, "
                            "one process per model, bundles in a fresh random order each round"},
               "models": {}}
    for spec in all_models:
        if chosen and spec.key not in chosen:
            continue
        started = time.perf_counter()
        results["models"][spec.label] = measure_model(spec, out / "peers" / spec.key, cache, config)
        results["models"][spec.label]["wall_s"] = round(time.perf_counter() - started, 1)
    results["checks"] = checks(results["models"])
    return results


def measure_model(spec: PeerModel, folder: Path, cache: Path, config: dict) -> dict:
    if folder.exists():
        shutil.rmtree(folder)  # a bundle left from an earlier run must not stand in for a failed build
    folder.mkdir(parents=True)
    entry = {"key": spec.key, "model": spec.model.replace(str(REPO) + "/", ""),
             "data": spec.data.replace(str(REPO) + "/", ""), "metric": spec.metric.replace(str(REPO) + "/", "")}
    try:
        weights = trained_weights(spec, cache, config, folder / "logs") if spec.train else None
    except RuntimeError as exc:
        return {**entry, "failed": str(exc)}
    entry["train"] = None if spec.train is None else {"epochs": config["train_epochs"] or spec.train[0],
                                                      "lr": spec.train[1]}
    entry["built"] = build_edgeslim(spec, folder, weights, cache, config)
    if "failed" in entry["built"]["fp32"]:
        return {**entry, "failed": f"fp32 export: {entry['built']['fp32']['failed']}"}
    seconds, code, text = _child([__file__, "peers", spec.key, folder, "--calibration-samples",
                                  config["calibration_samples"]], folder / "logs" / "peers.log",
                                 dict(os.environ, EDGESLIM_CACHE=str(cache)))
    report = folder / "peers.json"
    if not report.is_file():
        return {**entry, "failed": f"peers and accuracy: {_one_line(text)}"}
    measured = json.loads(report.read_text())
    print(f"bench: peers {spec.label}: peers quantized and every bundle evaluated ({seconds:.0f} s)", flush=True)
    for name, failure in measured["failed"].items():
        print(f"bench: peers {spec.label}: {name} failed: {failure}", flush=True)
    names = [name for name in [*EDGESLIM_BUNDLES, *PEERS] if name in measured["bundles"]]
    seconds, code, text = _child([__file__, "time", folder / "timing-input.npz", *[folder / n for n in names],
                                  "--rounds", config["rounds"], "--runs", config["runs"], "--warmup", config["warmup"],
                                  "--out", folder / "timing.json"], folder / "logs" / "timing.log")
    timing = json.loads((folder / "timing.json").read_text()) if (folder / "timing.json").is_file() else {}
    if not timing:
        entry["timing_failed"] = _one_line(text)
    print(f"bench: peers {spec.label}: {len(names)} bundles timed in turns ({seconds:.0f} s)", flush=True)
    entry["coverage_source"] = measured["coverage_source"]
    entry["bundles"] = rows(names, measured, timing)
    for name in [*EDGESLIM_BUNDLES, *PEERS]:
        if name not in entry["bundles"]:
            failure = entry["built"].get(name, {}).get("failed") or measured["failed"].get(name) or "not built"
            entry["bundles"][name] = {"failed": failure}
    entry["bundles"] = {name: entry["bundles"][name] for name in [*EDGESLIM_BUNDLES, *PEERS]}
    return entry


def x_of(timing: dict, name: str, reference: str) -> float | None:
    """`name`'s time over `reference`'s: the median of their per-round ratios (sdk.stats.paired_ratios), which
    compares the two in one state of this host where a ratio of overall p50s mixes its fast and slow spells."""
    from edgeslim.sdk.stats import paired_ratios

    rounds = {key: (timing.get(key) or {}).get("round_p50_ms") for key in (name, reference)}
    if not all(rounds.values()):
        return None
    return paired_ratios(rounds, reference)[name]


def rows(names: list[str], measured: dict, timing: dict) -> dict:
    fp32 = measured["bundles"]["fp32"]
    table = {}
    for name in names:
        bundle, times = measured["bundles"][name], timing.get(name, {})
        row = {"size_bytes": bundle["size_bytes"], "smaller": fp32["size_bytes"] / bundle["size_bytes"],
               "accuracy": bundle["accuracy"], "accuracy_delta": bundle["accuracy"] - fp32["accuracy"],
               "int8_coverage": bundle["coverage"], "manifest_int8_coverage": bundle.get("manifest_int8_coverage"),
               "int8_form": bundle.get("int8_form"), "compression": bundle["compression"]}
        if times:
            row.update({"p50_ms": times["p50_ms"], "p90_ms": times["p90_ms"], "round_p50_ms": times["round_p50_ms"],
                        "runs": times["runs"], "x_fp32": x_of(timing, name, "fp32")})
        table[name] = row
    return table


# -- checks (the Done-when lines) ----------------------------------------------------------

def _families(coverage) -> dict:
    """{family: (int8, total)} from an int8_coverage record, whichever of the known shapes it has."""
    if not isinstance(coverage, dict):
        return {}
    families = coverage.get("families", coverage)
    found = {}
    for family, value in families.items():
        if isinstance(value, dict) and "int8" in value and ("float" in value or "total" in value):
            total = value["total"] if "total" in value else value["int8"] + value["float"]
            found[family] = (int(value["int8"]), int(total))
    return found


def checks(models: dict) -> dict:
    """Done-when lines of the issue, each named with what was measured: name -> passed."""
    found = {}

    def check(name: str, ok: bool | None, figure: str) -> None:
        found[f"peers, {name} ({figure})"] = bool(ok)

    def bundles(label):
        entry = models.get(label, {})
        if "failed" in entry:  # the model itself failed (training, fp32 export): say so in every check
            return {name: {"failed": entry["failed"]} for name in [*EDGESLIM_BUNDLES, *PEERS]}
        return entry.get("bundles", {})

    def p50(label, name):
        row = bundles(label).get(name, {})
        return row.get("p50_ms") if "failed" not in row else None

    def x(label, fast, slow):  # fast's time over slow's, paired round by round
        return x_of(bundles(label), fast, slow)

    for label in ("MobileNet-style", "transformer", "all-MiniLM-L6-v2", "MobileNetV3-style"):
        if label not in models:
            continue
        for fast, slow in (("int8", "fp32"), ("pruned-kd-int8", "pruned-kd")):
            a, b = p50(label, fast), p50(label, slow)
            ratio = x(label, fast, slow) if a and b else None
            figure = f"{ratio:.2f}x: p50 {a:.3f} vs {b:.3f} ms" if ratio else \
                f"not measured: {bundles(label).get(fast if not a else slow, {}).get('failed', 'not timed')}"
            check(f"{label}: {fast} p50 at most 1.05x {slow}'s (cpu, batch 1, alternating)",
                  bool(ratio and ratio <= 1.05), figure)
    for label in ("MobileNet-style", "MobileNetV3-style"):
        if label not in models:
            continue
        mine, peer = bundles(label).get("int8", {}), bundles(label).get("ort-static", {})
        if "failed" in mine or "failed" in peer or not mine or not peer:
            check(f"{label}: INT8 against onnxruntime quantize_static", False,
                  f"not measured: {mine.get('failed') or peer.get('failed') or 'not built'}")
            continue
        size = mine["size_bytes"] / peer["size_bytes"]
        check(f"{label}: INT8 bundle at most 1.1x the size of quantize_static's", size <= 1.1,
              f"{size:.2f}x: {mine['size_bytes'] / 1024:.1f} vs {peer['size_bytes'] / 1024:.1f} KB")
        drop, peer_drop = 0.0 - mine["accuracy_delta"], 0.0 - peer["accuracy_delta"]  # 0.0 -: no "-0.00"
        more = drop - peer_drop
        check(f"{label}: INT8 loses at most 0.3 point more than quantize_static", more <= 0.3 + 1e-9,
              f"{more + 0.0:+.2f}: drop {drop:.2f} vs {peer_drop:.2f}")
        conv = _families(mine.get("manifest_int8_coverage") or mine.get("int8_coverage")).get("conv")
        form = mine.get("int8_form") or {}
        sent_back = form.get("chosen") == "weights"  # measurement sent every layer back to float
        integer = {name: row.get("x_parent") for name, row in (form.get("forms") or {}).items()
                   if name in ("nncf", "ort")}
        check(f"{label}: at least 90% of INT8's convolutions run as integer kernels, unless measurement sent "
              "them back to float (the manifest says so)", bool(conv and conv[0] >= 0.9 * conv[1]) or sent_back,
              (f"{conv[0]}/{conv[1]}" if conv else "no coverage figure")
              + ("; form weights chosen: integer forms timed at "
                 + ", ".join(f"{n} {x:.2f}x" for n, x in integer.items() if x) + " the float parent"
                 if sent_back else ""))
    label = "all-MiniLM-L6-v2"
    if label in models:
        a, b = p50(label, "int8"), p50(label, "fp32")
        ratio = x(label, "int8", "fp32") if a and b else None
        check(f"{label}: INT8 at least 1.8x faster than fp32 (seq len 64)", bool(ratio and ratio <= 1 / 1.8),
              f"{1 / ratio:.2f}x: p50 {a:.3f} vs {b:.3f} ms" if ratio else "not measured")
        row = bundles(label).get("int8", {})
        accuracy = row.get("accuracy") if "failed" not in row else None
        check(f"{label}: INT8 mean cosine to the fp32 embeddings at least 0.99",
              accuracy is not None and accuracy >= 99.0,
              f"{accuracy / 100:.4f}" if accuracy is not None else f"not measured: {row.get('failed', 'not built')}")
    return found


# -- Markdown ------------------------------------------------------------------------------------

def _kernels(coverage) -> str:
    families = _families(coverage)
    if not families:
        return "-"
    order = ["conv", "gemm", "matmul", "attention"]
    return ", ".join(f"{family} {n}/{total}" for family, (n, total) in
                     sorted(families.items(), key=lambda item: order.index(item[0]) if item[0] in order else 9))


def cpu_features() -> str:
    """The instruction-set extensions that decide how onnxruntime's INT8 kernels sum (VNNI or not)."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    shown = [flag for flag in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if flag in flags]
    return ", ".join(shown) or "none of avx2, avx512f, VNNI"


def markdown(peers: dict, machine: str, command: str) -> str:
    config = peers["settings"]
    lines = ["## INT8 against the peers (issue item 5)", "",
             f"Command: `{command}`"
             f"{' with BENCH_QUICK=1 (quick settings: the figures mean nothing)' if config['quick'] else ''}.",
             f"Machine: {machine}; CPU features: {cpu_features()}.",
             f"Calibration: the first {config['calibration_samples']} samples of `train`, the same for every "
             f"quantizer. pruned-kd: `--prune {config['prune']} --distill --epochs {config['distill_epochs']}`. "
             f"Latency: SDK, `cpu`, default threads, batch 1, one real val sample; the bundles of a model are "
             f"loaded in one process and timed in turns, {config['warmup']} warm-up calls each, then "
             f"{config['rounds']} rounds in a fresh random order of {config['runs']} calls each; p50 of all "
             f"{config['rounds'] * config['runs']} calls. `x fp32`: the bundle's time over fp32's, the median of their "
             "per-round ratios (below 1 is faster; this host moves between a fast and a slow state for seconds at a "
             "time, and a round compares two bundles in one state). "
             "`int8 kernels`: nodes onnxruntime's optimized CPU graph runs as integer kernels, of all of that kind. "
             "A bundle name followed by a form in parentheses: the INT8 form edgeslim chose "
             "(manifest `int8_form`).", ""]
    for peer, what in config["peers"].items():
        lines.append(f"- `{peer}`: {what}")
    for label, entry in peers["models"].items():
        metric = "cosine" if "cosine" in entry.get("metric", "") else "top1"
        lines += ["", f"### {label}", ""]
        if "failed" in entry:
            lines.append(f"failed: {entry['failed']}")
            continue
        lines += [f"Model `{entry['model']}`, data `{entry['data']}`, metric {metric}"
                  + (f"; trained {entry['train']['epochs']} epochs at lr {entry['train']['lr']:g}"
                     if entry.get("train") else "")
                  + f"; int8 kernels counted by {entry.get('coverage_source', '?')}; "
                  f"{entry['wall_s']:.0f} s in all.", "",
                  f"| bundle | size KB | x smaller | {metric} | Δ | p50 ms | x fp32 | int8 kernels |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, row in entry["bundles"].items():
            if "failed" in row:
                lines.append(f"| {name} | failed: {row['failed'].replace('|', '/')} | | | | | | |")
                continue
            p50 = f"{row['p50_ms']:.3f}" if row.get("p50_ms") else "-"
            ratio = f"{row['x_fp32']:.2f}x" if row.get("x_fp32") else "-"
            form = f" ({row['int8_form']['chosen']})" if row.get("int8_form") else ""
            lines.append(f"| {name}{form} | {row['size_bytes'] / 1024:.1f} | {row['smaller']:.2f}x | "
                         f"{row['accuracy']:.2f} | "
                         f"{row['accuracy_delta'] + 0.0:+.2f} | {p50} | {ratio} | {_kernels(row['int8_coverage'])} |")
    lines += ["", "| check | result |", "|---|---|"]
    for name, ok in peers["checks"].items():
        lines.append(f"| {name.removeprefix('peers, ')} | {'pass' if ok else '**FAIL**'} |")
    return "\n".join(lines) + "\n"


# -- children ------------------------------------------------------------------------------------

def _spec(key: str) -> PeerModel:
    return next(m for m in models() if m.key == key)


def child_train(key: str, weights: Path, epochs: int, lr: float) -> None:
    import torch

    from edgeslim.compress.train import FitOptions, fit
    from edgeslim.core.model_io import load_model
    from edgeslim.core.specs import load_data, load_metric

    spec = _spec(key)
    model = load_model(spec.model)
    data = load_data(spec.data)
    fit(model, data.train, FitOptions(epochs=epochs, lr=lr), label=f"train {key}", val=data.val,
        metric=load_metric(spec.metric))
    weights.parent.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_suffix(f".tmp{os.getpid()}")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, weights)


def _quantize_peers(fp32_path: Path, samples: list[dict], transformer: bool, folder: Path, tmp: Path) -> dict:
    """Each peer's model written as a bundle under `folder`; {name: failure line} for those that failed."""
    import logging

    import onnx
    import onnxruntime
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgeslim.export.bundle import write_unverified_bundle

    failed = {}
    ort = {"onnxruntime": onnxruntime.__version__}
    fp32_path, folder, tmp = fp32_path.resolve(), folder.resolve(), tmp.resolve()  # they run inside tmp

    def attempt(name, make):
        started = time.perf_counter()
        try:
            proto, compression = make()
            compression["seconds"] = round(time.perf_counter() - started, 1)
            write_unverified_bundle(proto, folder / name, name, [compression])  # what the SDK reads
        except Exception as exc:  # a peer that cannot quantize this model is a finding, not a crash
            failed[name] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]
        print(f"{name}: {'failed: ' + failed[name] if name in failed else 'done'} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.samples = iter(samples)

        def get_next(self):
            return next(self.samples, None)

    def static():
        pre = tmp / "static-pre.onnx"
        pre_process = "quant_pre_process"
        try:
            quant_pre_process(str(fp32_path), str(pre))
        except Exception as exc:  # symbolic shape inference gives up on some dynamic reshapes
            print(f"quant_pre_process failed ({type(exc).__name__}: {exc}); again with skip_symbolic_shape=True",
                  flush=True)
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
            pre_process = "quant_pre_process(skip_symbolic_shape=True)"
        out = tmp / "static.onnx"
        # uint8 activations: onnxruntime's x86 CPU selectors fuse those (its default int8 activations
        # leave half of the MobileNet-style convolutions in float here), as the peer ran.
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=True, activation_type=QuantType.QUInt8)
        return onnx.load(str(out)), {"step": "ort.quantize_static", "quant_format": "QDQ", "per_channel": True,
                                     "reduce_range": True, "activation_type": "QUInt8",
                                     "weight_type": "QInt8 (default)", "calibrate_method": "MinMax (default)",
                                     "pre_process": pre_process, "calibration_samples": len(samples), **ort}

    def dynamic(per_channel: bool):
        def make():
            out = tmp / f"dynamic-{per_channel}.onnx"
            options = {"per_channel": True, "reduce_range": True} if per_channel else {}
            quantize_dynamic(str(fp32_path), str(out), **options)
            return onnx.load(str(out)), {"step": "ort.quantize_dynamic", **(options or {"defaults": True}), **ort}
        return make

    def nncf_default():
        import nncf

        nncf.set_log_level(logging.WARNING)  # less output; no effect on the result
        model = onnx.load(str(fp32_path))
        options = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
        quantized = nncf.quantize(model, nncf.Dataset(samples), **options)
        return quantized, {"step": "nncf.quantize", "defaults": True, "calibration_samples": len(samples),
                           **({"model_type": "TRANSFORMER"} if transformer else {}), "nncf": nncf.__version__}

    # onnxruntime's symbolic shape inference leaves sym_shape_infer_temp.onnx and its external data in the
    # working directory (the repository, for `make bench`): run the peers inside the temporary folder.
    before = os.getcwd()
    os.chdir(tmp)
    try:
        attempt("ort-static", static)
        attempt("ort-dynamic", dynamic(False))
        attempt("ort-dynamic-pc", dynamic(True))
        attempt("nncf-default", nncf_default)
    finally:
        os.chdir(before)
    return failed


def coverage_of(model_bytes: bytes) -> tuple[dict | None, str]:
    """edgeslim's count of integer and float kernels in onnxruntime's optimized CPU graph."""
    from edgeslim.export.kernels import int8_coverage

    return int8_coverage(model_bytes), "edgeslim.export.kernels.int8_coverage"


def child_peers(key: str, folder: Path, calibration: int) -> None:
    """Quantize with the peers, then evaluate every bundle of `folder`; writes folder/peers.json."""
    import tempfile
    from types import SimpleNamespace

    from edgeslim.compress.quantize import calibration_samples
    from edgeslim.core.data import feed_for
    from edgeslim.core.outputs import write_json
    from edgeslim.core.specs import load_data, load_metric
    from edgeslim.devices.accuracy import evaluate
    from edgeslim.sdk import load
    from edgeslim.sdk.bundle import bundle_size, read_manifest

    spec = _spec(key)
    data, metric = load_data(spec.data), load_metric(spec.metric)
    fp32_manifest = read_manifest(folder / "fp32")
    names = [item["name"] for item in fp32_manifest["inputs"]]
    samples = calibration_samples(SimpleNamespace(data=data, input_names=names), calibration)
    print(f"{len(samples)} calibration samples", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        failed = _quantize_peers(folder / "fp32" / "model.onnx", samples, spec.transformer, folder, Path(tmp))
    first = feed_for(data.val[0][0], names)
    np.savez(folder / "timing-input.npz", **{name: value[:1] for name, value in first.items()})
    bundles, source = {}, None
    for name in [*EDGESLIM_BUNDLES, *PEERS]:
        if not (folder / name / "manifest.json").is_file():
            continue
        try:  # a peer's model that onnxruntime cannot run is a finding: record it, go on
            model = load(folder / name)
            accuracy = evaluate(model, data.val, metric)
        except Exception as exc:
            failed[name] = f"runs through the SDK: {type(exc).__name__}: {' '.join(str(exc).split())}"[:300]
            shutil.rmtree(folder / name)  # so that it is neither timed nor mistaken for a built bundle
            print(f"{name}: {failed[name]}", flush=True)
            continue
        manifest = model.manifest
        coverage, source = coverage_of((folder / name / "model.onnx").read_bytes())
        if name in PEERS:  # recorded as edgeslim records it for its own bundles
            manifest["metrics"]["accuracy"] = accuracy
            write_json(folder / name / "manifest.json", manifest)
        bundles[name] = {"size_bytes": bundle_size(folder / name, manifest), "accuracy": accuracy,
                         "coverage": coverage,
                         "manifest_int8_coverage": manifest.get("metrics", {}).get("int8_coverage"),
                         "int8_form": manifest.get("metrics", {}).get("int8_form"),
                         "compression": manifest.get("compression", [])}
        print(f"{name}: accuracy {accuracy:.2f}, {bundles[name]['size_bytes'] / 1024:.1f} KB", flush=True)
        del model
    write_json(folder / "peers.json", {"bundles": bundles, "failed": failed, "coverage_source": source,
                                       "calibration_samples": len(samples)})


def child_time(inputs: Path, bundles: list[Path], rounds: int, runs: int, warmup: int, out: Path) -> None:
    """All bundles in this one process, timed in turns (sdk.stats.alternating); writes {name: stats} to `out`."""
    from edgeslim.sdk import load
    from edgeslim.sdk.stats import alternating

    with np.load(inputs) as arrays:
        feed = {name: arrays[name] for name in arrays.files}
    models = {bundle.name: load(bundle) for bundle in bundles}
    calls = {name: (lambda predict=model.predict: predict(feed)) for name, model in models.items()}
    gc.disable()
    try:
        timed = alternating(calls, rounds=rounds, runs=runs, warmup=warmup)
    finally:
        gc.enable()
    result = {name: {"p50_ms": timed["p50_ms"][name], "p90_ms": float(np.percentile(values, 90)),
                     "mean_ms": float(np.mean(values)), "runs": len(values),
                     "round_p50_ms": [round(v, 4) for v in timed["round_p50_ms"][name]]}
              for name, values in timed["times_ms"].items()}
    out.write_text(json.dumps(result, indent=2))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train")
    train.add_argument("key")
    train.add_argument("weights", type=Path)
    train.add_argument("--epochs", type=int, required=True)
    train.add_argument("--lr", type=float, required=True)
    peers = commands.add_parser("peers")
    peers.add_argument("key")
    peers.add_argument("folder", type=Path)
    peers.add_argument("--calibration-samples", type=int, default=300)
    timing = commands.add_parser("time")
    timing.add_argument("inputs", type=Path)
    timing.add_argument("bundles", type=Path, nargs="+")
    timing.add_argument("--rounds", type=int, default=15)
    timing.add_argument("--runs", type=int, default=50)
    timing.add_argument("--warmup", type=int, default=20)
    timing.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "train":
        child_train(args.key, args.weights, args.epochs, args.lr)
    elif args.command == "peers":
        child_peers(args.key, args.folder, args.calibration_samples)
    else:
        child_time(args.inputs, args.bundles, args.rounds, args.runs, args.warmup, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
