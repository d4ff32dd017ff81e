"""`make bench`: the figures BENCHMARKS.md quotes, measured on this machine.

1. The demo, cold (no cached teacher): wall time and the report's size, speed and accuracy ratios
   checked against the spine's targets.
2. SDK overhead: model.predict against a bare onnxruntime session.run on the same bundle and input.
3. Memory: resident memory before and after 10,000 predicts.
4. Issue 3 on the demo model (needs part 1's cached teacher): accuracy control, budgets, a sweep.
5. Issue 3's accuracy targets on the demo CNN, the MobileNet-style and the transformer test models,
   3 training seeds each: `--max-accuracy-drop 0.5` (how many layers stay INT8), and QAT against PTQ.
6. The peers (`peers`, bench/peers.py): edgeslim's INT8 beside onnxruntime's quantize_static and
   quantize_dynamic and NNCF's defaults, on the three test models, a MobileNetV3-style model and
   all-MiniLM-L6-v2, timed in turns in one process; also written to bench-out/peers.md.
7. The models users bring (`real`, bench/real.py): all-MiniLM-L6-v2 pruned, distilled and quantized
   against fp32, a time-major CRNN, the tests' tiny BertModel; also written to bench-out/real.md.

8. Beyond one machine (`scale`, bench/scale.py): distillation throughput with 1 and 2 torchrun ranks,
   torchrun's bundle against one process's, the cached teacher against the live one, and validation
   over two loopback ssh devices against one; also written to bench-out/scale.md.

`make bench` runs them all; `make bench PARTS=models` (or demo, budgets, peers, real, scale) runs some.
Writes bench-out/results.json and prints a Markdown summary. BENCH_QUICK=1 makes part `peers` tiny
(to check that it runs; its figures mean nothing); BENCH_CACHE=<folder> keeps its trained weights
between runs (the default cache is a new temporary folder, so the demo runs cold).
"""
from __future__ import annotations

import atexit
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(os.environ.get("BENCH_OUT", "bench-out"))


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 "?")
    import onnxruntime

    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}"


CACHE = tempfile.mkdtemp(prefix="edgeslim-bench-cache-")
atexit.register(shutil.rmtree, CACHE, ignore_errors=True)  # a run's checkpoints and caches: GBs on MiniLM
# Part peers' trained weights; BENCH_CACHE keeps them between runs without warming the demo's cache.
PEERS_CACHE = Path(os.environ.get("BENCH_CACHE") or CACHE)
PARTS = ("demo", "budgets", "models", "peers", "real", "scale")


def bench_demo() -> dict:
    env = dict(os.environ, EDGESLIM_CACHE=CACHE)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "edgeslim", "--quiet", "run", "--out", str(OUT / "demo")],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    report = json.loads((OUT / "demo" / "report.json").read_text())
    by = {c["name"]: c for c in report["candidates"]}
    fp32 = by["fp32"]

    def ratio(name):
        entry = by[name]
        return {"smaller": fp32["size_bytes"] / entry["size_bytes"],
                "speedup_p50": fp32["latency"]["cpu"]["p50_ms"] / entry["latency"]["cpu"]["p50_ms"],
                "accuracy": entry["accuracy"], "accuracy_delta": entry["accuracy"] - fp32["accuracy"],
                "p50_ms": entry["latency"]["cpu"]["p50_ms"], "size_bytes": entry["size_bytes"]}

    figures = {name: ratio(name) for name in by}
    checks = {
        "demo under 300 s": wall < 300,
        "int8 >= 3.5x smaller": figures["int8"]["smaller"] >= 3.5,
        "pruned-kd-int8 >= 8x smaller": figures["pruned-kd-int8"]["smaller"] >= 8,
        "pruned-kd-int8 >= 2x faster (p50, cpu, batch 1)": figures["pruned-kd-int8"]["speedup_p50"] >= 2,
        "every candidate within 1.0 point of fp32": all(abs(f["accuracy_delta"]) <= 1.0 for f in figures.values()),
    }
    return {"wall_s": wall, "candidates": figures, "checks": checks}


def _rss_mb() -> float:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:")) / 1024.0


def bench_sdk(bundle: Path, runs: int = 20000) -> dict:
    """SDK predict against a bare session.run on the same session and input.

    The two calls alternate one by one, in swapped order every other run, so that drift in this
    shared machine and the cost of going second hit both alike;
    the same session object isolates the wrapper's cost from session-to-session variation.
    """
    from edgeslim.sdk import load

    model = load(bundle, threads=1)
    session = model.session
    x = model.sample_inputs(1)["input"]
    feed, names = {"input": x}, [o.name for o in session.get_outputs()]
    for _ in range(500):
        session.run(names, feed)
        model.predict(x)
    bare, sdk = np.empty(runs), np.empty(runs)
    clock = time.perf_counter
    calls = (lambda: session.run(names, feed), lambda: model.predict(x))
    for index in range(runs):
        first = index % 2  # swap the order every other run: neither side always goes second
        started = clock()
        calls[first]()
        middle = clock()
        calls[1 - first]()
        ended = clock()
        if first == 0:
            bare[index], sdk[index] = middle - started, ended - middle
        else:
            sdk[index], bare[index] = middle - started, ended - middle
    bare_p50, sdk_p50 = float(np.median(bare)) * 1000, float(np.median(sdk)) * 1000
    before = _rss_mb()
    for _ in range(10_000):
        model.predict(x)
    after = _rss_mb()
    return {"bundle": str(bundle), "runs": runs, "bare_p50_ms": bare_p50, "sdk_p50_ms": sdk_p50,
            "overhead": sdk_p50 / bare_p50 - 1.0, "rss_before_mb": before, "rss_after_10000_mb": after,
            "rss_growth": after / before - 1.0,
            "checks": {"SDK overhead <= 5% at p50": sdk_p50 / bare_p50 - 1.0 <= 0.05,
                       "10,000 predicts grow RSS < 5%": after / before - 1.0 < 0.05}}


def _edgeslim(*args) -> tuple[float, int, str]:
    env = dict(os.environ, EDGESLIM_CACHE=CACHE)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "edgeslim", "--quiet", *map(str, args)], env=env,
                          capture_output=True, text=True)
    return time.perf_counter() - started, done.returncode, done.stdout + done.stderr


def bench_budgets() -> dict:
    """Issue 3 on the demo model (teacher from the demo's cache): accuracy control, size and latency
    budgets, and a six-candidate sweep. QAT against PTQ is part `models`, over 3 seeds."""
    weights = next(Path(CACHE).glob("trained-*.pt"))
    common = ["--model", "edgeslim.demo:digits_cnn", "--weights", weights, "--data", "edgeslim.demo:digits_data"]
    out, results = OUT / "budgets", {}

    def manifest(name):
        path = out / name / "manifest.json"
        if not path.is_file():
            raise SystemExit(f"bench: {name} was not built; run its command by hand to see why")
        return json.loads(path.read_text())["metrics"]

    seconds, code, _ = _edgeslim("compress", *common, "--max-accuracy-drop", "0.5", "--out", out / "ctl")
    control = manifest("ctl")["accuracy_control"]
    results["accuracy_control"] = {"seconds": seconds, "exit": code, **{k: control[k] for k in (
        "fp32_accuracy", "accuracy", "drop", "layers", "layers_int8", "met")}}
    for kind, flag, target, extra in (("size", "--target-size", 0.3, ["--quantize", "int8"]),
                                      ("latency", "--target-latency", 0.15, ["--device", "cpu"])):
        seconds, code, _ = _edgeslim("compress", *common, *extra, flag, target, "--epochs", "6", "--out", out / kind)
        budget = manifest(kind)["budget"]
        results[f"{kind}_budget"] = {"seconds": seconds, "exit": code, "target": target, "measured": budget["measured"],
                                     "distance": budget["distance"], "ratio": budget["ratio"],
                                     "probes": len(budget["probes"]), "accuracy": manifest(kind)["accuracy"]}
    seconds, code, _ = _edgeslim("run", Path(__file__).parent / "recipes" / "demo-sweep.yaml", "--out", out / "sweep")
    report = json.loads((out / "sweep" / "report.json").read_text())
    results["sweep"] = {"seconds": seconds, "exit": code, "candidates": len(report["candidates"]),
                        "front_size": [c["name"] for c in report["candidates"] if c["pareto"]["size"]],
                        "front_cpu": [c["name"] for c in report["candidates"] if c["pareto"].get("latency[cpu]")],
                        "slower": [c["name"] for c in report["candidates"] if any(c["slower_than_baseline"].values())]}
    checks = {
        "accuracy control: within 0.5 point": control["met"] and control["drop"] <= 0.5,
        "size budget within 10 %": abs(results["size_budget"]["distance"]) <= 0.10,
        "latency budget within 10 %": abs(results["latency_budget"]["distance"]) <= 0.10,
        "6-candidate sweep under 10 minutes": results["sweep"]["candidates"] == 6 and seconds < 600,
    }
    return {"results": results, "checks": checks}


ZOO = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "zoo.py"
# The three models issue 3 names, each trained as the demo or the test suite trains it.
QAT_MODELS = {
    "demo CNN": ("edgeslim.demo:digits_cnn", "edgeslim.demo:digits_data", 15, 2e-3),
    "MobileNet-style": (f"{ZOO}:mobilenet", f"{ZOO}:digits", 8, 5e-3),
    "transformer": (f"{ZOO}:transformer", f"{ZOO}:digits", 10, 3e-3),
}


def bench_models(seeds: int = 3) -> dict:
    """Accuracy control and QAT against PTQ on each model, over several training seeds: one seed's
    val set (360 digits) moves in steps of 0.28 points, which is the size of the differences compared.

    `ctl` is `--max-accuracy-drop 0.5`. `qat` keeps its best val epoch (the calibrated start
    included); `qat-last` keeps the last epoch, which shows how much that selection on val is worth.
    """
    import yaml

    rows = {}
    for label, (model, data, epochs, lr) in QAT_MODELS.items():
        rows[label] = []
        for seed in range(seeds):
            recipe = {"model": model, "data": data, "train": {"epochs": epochs, "lr": lr, "seed": seed},
                      "devices": ["cpu"], "baseline": "fp32", "bench": {"runs": 30, "warmup": 5},
                      "candidates": [{"name": "fp32"}, {"name": "ptq", "steps": ["int8"]},
                                     {"name": "ctl", "steps": [{"int8": {"max_accuracy_drop": 0.5}}]},
                                     {"name": "qat", "steps": [{"qat": {"epochs": 3}}]},
                                     {"name": "qat-last", "steps": [{"qat": {"epochs": 3, "keep_best": False}}]}]}
            folder = OUT / "models" / f"{label.split()[0].lower()}-seed{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
            seconds, code, text = _edgeslim("run", folder / "recipe.yaml", "--out", folder / "out")
            report = folder / "out" / "report.json"
            if not report.is_file():
                raise SystemExit(f"bench: the QAT recipe for {label}, seed {seed} failed:\n{text[-2000:]}")
            accuracy = {c["name"]: c["accuracy"] for c in json.loads(report.read_text())["candidates"]}
            control = json.loads((folder / "out" / "ctl" / "manifest.json").read_text())["metrics"]["accuracy_control"]
            control = {k: control[k] for k in ("drop", "met", "layers", "layers_int8")}
            rows[label].append({"seed": seed, "seconds": round(seconds, 1), "exit": code, **accuracy,
                                "ctl_figures": control})
            print(f"bench: {label}, seed {seed}: {accuracy}; ctl {control} ({seconds:.0f} s)", flush=True)
    means = {label: {name: float(np.mean([row[name] for row in runs]))
                     for name in ("fp32", "ptq", "ctl", "qat", "qat-last")}
             for label, runs in rows.items()}
    checks = {}
    for label, runs in rows.items():
        checks[f"accuracy control within 0.5 point, most layers INT8 ({label}, every seed)"] = all(
            row["ctl_figures"]["met"] and row["ctl_figures"]["layers_int8"] * 2 > row["ctl_figures"]["layers"]
            for row in runs)
        checks[f"QAT matches or beats PTQ ({label}, mean of {seeds} seeds)"] = (
            means[label]["qat"] >= means[label]["ptq"])
    return {"results": {"runs": rows, "means": means}, "checks": checks}


def print_models(models: dict) -> None:
    print("\nAccuracy on val, mean over seeds (ctl: --max-accuracy-drop 0.5, INT8 layers per seed):\n"
          "| model | fp32 | PTQ | ctl | ctl INT8 layers | QAT (best epoch) | QAT (last epoch) |\n"
          "|---|---|---|---|---|---|---|")
    for label, mean in models["results"]["means"].items():
        layers = ", ".join(f"{row['ctl_figures']['layers_int8']}/{row['ctl_figures']['layers']}"
                           for row in models["results"]["runs"][label])
        print(f"| {label} | {mean['fp32']:.2f} | {mean['ptq']:.2f} | {mean['ctl']:.2f} | {layers} | "
              f"{mean['qat']:.2f} | "
              f"{mean['qat-last']:.2f} |")


def main(parts: list[str]) -> int:
    """`parts`: any of demo, budgets, models, peers, real (default: all; sdk goes with demo)."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise SystemExit(f"bench: unknown part(s) {sorted(unknown)}; choose from {', '.join(PARTS)}")
    command = "make bench" + (f" PARTS='{' '.join(parts)}'" if parts else "")
    parts = parts or list(PARTS)
    OUT.mkdir(exist_ok=True)
    results = {"machine": machine(), "command": command, "parts": parts}
    print(f"machine: {results['machine']}", flush=True)
    checks = {}
    if "demo" in parts:
        results["demo"] = bench_demo()
        print(f"demo: {results['demo']['wall_s']:.0f} s", flush=True)
        results["sdk"] = bench_sdk(OUT / "demo" / "fp32")
        print_demo(results)
        checks.update({**results["demo"]["checks"], **results["sdk"]["checks"]})
    if "budgets" in parts:
        results["budgets"] = bench_budgets()
        print("\nissue 3 on the demo model:")
        for name, figures in results["budgets"]["results"].items():
            print(f"  {name}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                            for k, v in figures.items()))
        checks.update(results["budgets"]["checks"])
    if "models" in parts:
        results["models"] = bench_models()
        print_models(results["models"])
        checks.update(results["models"]["checks"])
    for part in ("peers", "real", "scale"):   # parts in files of their own: bench/PART.py
        if part in parts:
            results[part] = _file_part(part, results["machine"], command)
            checks.update(results[part]["checks"])
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    failed = 0
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
        failed += not ok
    return 1 if failed else 0


def _file_part(part: str, machine: str, command: str) -> dict:
    """Run bench/PART.py's `bench(out, cache)`; its Markdown goes to bench-out/PART.md and stdout."""
    import importlib

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    module = importlib.import_module(part)
    found = module.bench(OUT, PEERS_CACHE)
    table = module.markdown(found, machine, command)
    (OUT / f"{part}.md").write_text(table)
    print("\n" + table)
    return found


def print_demo(results: dict) -> None:
    print("\n| candidate | size | x smaller | p50 ms (cpu) | speed-up | accuracy | Δ |\n|---|---|---|---|---|---|---|")
    for name, f in results["demo"]["candidates"].items():
        print(f"| {name} | {f['size_bytes'] / 1024:.1f} KB | {f['smaller']:.2f}x | {f['p50_ms']:.3f} | "
              f"{f['speedup_p50']:.2f}x | {f['accuracy']:.2f} | {f['accuracy_delta']:+.2f} |")
    sdk = results["sdk"]
    print(f"\nSDK predict p50 {sdk['sdk_p50_ms'] * 1000:.1f} us vs bare session.run {sdk['bare_p50_ms'] * 1000:.1f} us "
          f"(overhead {sdk['overhead']:+.2%}, {sdk['runs']} alternating runs each, same session, 1 thread); "
          f"RSS {sdk['rss_before_mb']:.1f} -> {sdk['rss_after_10000_mb']:.1f} MB after 10,000 predicts "
          f"({sdk['rss_growth']:+.2%})")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
