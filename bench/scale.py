"""Part `scale` of `make bench` (issue 12): fine-tuning beyond one process, validation beyond one device.

1. Distillation throughput (samples/s) of a ResNet-18 student from a ResNet-18 teacher on synthetic
   3x32x32 images: one process (all cores) against 2 gloo ranks under torchrun (a core each), same
   effective batch.
2. `torchrun --nproc_per_node 2 -m edgeslim compress --prune 0.5 --distill` against the same command in one
   process, on the demo CNN and digits: the val accuracy of each bundle.
3. The teacher cached on disk against the live teacher: seconds per distillation epoch and the student's
   accuracy, a ResNet-18 teacher (digits upsampled to 32x32) and the demo's small CNN as student.
4. Validation over two loopback ssh devices (two sshd, each measuring with one thread) against one:
   wall time of `edgeslim validate`.
5. GPU figures where this session has a GPU machine (it runs bench/gpu/ by hand; see BENCHMARKS.md).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
QUICK = bool(os.environ.get("BENCH_QUICK"))


def _env(cache: Path) -> dict:
    return {**os.environ, "EDGESLIM_CACHE": str(cache), "EDGESLIM_HISTORY": "off"}


def _torchrun(ranks: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]


def throughput(out: Path) -> dict:
    samples, rows, epochs = (256, 64, 1) if QUICK else (1536, 64, 2)
    found = {}
    for ranks in (1, 2, 1, 2):  # in turns: the host drifts
        result = out / f"scale-throughput-{ranks}.json"
        launch = [sys.executable] if ranks == 1 else _torchrun(ranks)
        subprocess.run([*launch, str(HERE / "scale_fit.py"), str(result), str(samples), str(rows), str(epochs)],
                       check=True, env={**os.environ, "EDGESLIM_HISTORY": "off"}, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        figures = json.loads(result.read_text())
        best = found.get(ranks)
        if best is None or figures["samples_per_s"] > best["samples_per_s"]:
            found[ranks] = figures
    return {str(ranks): figures for ranks, figures in found.items()}


def _demo_weights(cache: Path) -> Path:
    """The demo CNN trained on digits (3 epochs), as a user's weights file."""
    import torch

    from edgeslim.compress.train import FitOptions, fit
    from edgeslim.demo import digits_cnn, digits_data

    path = cache / "scale-demo-cnn.pt"
    if not path.is_file():
        model = digits_cnn()
        fit(model, digits_data()["train"], FitOptions(epochs=3, lr=3e-3), "scale teacher")
        torch.save(model.state_dict(), path)
    return path


def ranks_accuracy(out: Path, cache: Path) -> dict:
    weights = _demo_weights(cache)
    epochs = "2" if QUICK else "6"
    common = ["-m", "edgeslim", "compress", "--model", "edgeslim.demo:digits_cnn", "--weights", str(weights),
              "--data", "edgeslim.demo:digits_data", "--prune", "0.5", "--distill", "--epochs", epochs]
    found = {}
    for ranks in (1, 2):
        bundle = out / f"scale-compress-{ranks}"
        launch = [sys.executable] if ranks == 1 else _torchrun(ranks)
        started = time.perf_counter()
        subprocess.run([*launch, *common, "--out", str(bundle), "--force"], check=True, env=_env(cache),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        manifest = json.loads((bundle / "manifest.json").read_text())
        found[str(ranks)] = {"accuracy": manifest["metrics"]["accuracy"], "wall_s": time.perf_counter() - started,
                             "run": manifest["metrics"].get("distill_run")}
    found["command"] = "torchrun --standalone --nproc_per_node 2 -m edgeslim compress --model " \
                       "edgeslim.demo:digits_cnn --weights W --data edgeslim.demo:digits_data --prune 0.5 " \
                       f"--distill --epochs {epochs}"
    return found


def teacher_cache(cache: Path) -> dict:
    """Seconds per distillation epoch and accuracy, the teacher live and cached, two turns each."""
    import copy

    import numpy as np
    import torch

    sys.path.insert(0, str(HERE / "gpu"))
    from resnet import ResNet18

    from edgeslim.compress.train import FitOptions, evaluate_torch, fit
    from edgeslim.core.metrics import top1
    from edgeslim.demo import batches, digits_arrays, digits_cnn

    def upsampled(images):
        return np.ascontiguousarray(images.repeat(4, axis=-1).repeat(4, axis=-2))

    x_train, y_train, x_val, y_val = digits_arrays()
    train32 = batches(upsampled(x_train), y_train, 64)
    train8, val8 = batches(x_train, y_train, 64), batches(x_val, y_val, 120)
    torch.manual_seed(0)
    big = ResNet18(channels=1)
    fit(big, train32, FitOptions(epochs=1 if QUICK else 3, lr=3e-3, device="cpu"), "scale resnet teacher")

    class OnDigits8(torch.nn.Module):  # the teacher sees the student's 8x8 inputs, upsampled inside
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x.repeat_interleave(4, dim=-1).repeat_interleave(4, dim=-2))

    teacher = OnDigits8(big).eval()
    torch.manual_seed(1)
    student = digits_cnn()
    epochs = 2 if QUICK else 4
    found: dict = {"teacher_accuracy": evaluate_torch(teacher, val8, top1), "epochs": epochs, "runs": {}}
    for mode in ("off", "on", "off", "on"):
        history, facts = [], {}
        started = time.perf_counter()
        trained = fit(copy.deepcopy(student), train8, FitOptions(epochs=epochs, lr=3e-3, teacher_cache=mode,
                                                                 device="cpu"),
                      f"scale {mode}", teacher=teacher, history=history, facts=facts)
        row = {"teacher": facts["teacher"], "epoch_s": [r["seconds"] for r in history],
               "wall_s": time.perf_counter() - started, "accuracy": evaluate_torch(trained, val8, top1)}
        found["runs"].setdefault(facts["teacher"], []).append(row)
    return found


def fleet(out: Path) -> dict:
    """`edgeslim validate` of two bundles on one loopback ssh device, then on two at once (each 1 thread)."""
    sys.path.insert(0, str(REPO / "tests"))
    from sshd import LoopbackSshd, ensure_installed

    reason = ensure_installed()
    if reason:
        return {"skipped": reason}
    bundles = [out / "scale-compress-1", out / "scale-compress-2"]
    servers = []
    try:
        for index in (0, 1):
            folder = (out / f"scale-sshd-{index}").resolve()  # ssh:// URLs take absolute key paths
            folder.mkdir(exist_ok=True)
            for stale in folder.iterdir():
                stale.unlink()
            servers.append(LoopbackSshd(folder).start())
        urls = [server.url(Path(sys.executable)) + "&threads=1" for server in servers]
        runs = "100" if QUICK else "1500"
        found = {}
        for name, devices in (("one", urls[:1]), ("two", urls), ("one again", urls[:1]), ("two again", urls)):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "edgeslim", "validate", *map(str, bundles), "--data",
                            "edgeslim.demo:digits_data", *[a for url in devices for a in ("--device", url)],
                            "--runs", runs, "--warmup", "20", "--out", str(out / f"scale-fleet-{len(devices)}.json"),
                            "--force"], check=True, env={**os.environ, "EDGESLIM_HISTORY": "off"},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            found[name] = time.perf_counter() - started
        report = json.loads((out / "scale-fleet-2.json").read_text())
        found["in_parallel"] = report["settings"]["lanes"]["in_parallel"]
        found["runs"] = int(runs)
        return found
    finally:
        for server in servers:
            server.stop()


def bench(out: Path, cache: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    results = {"throughput": throughput(out)}
    print(f"scale: throughput {results['throughput']}", flush=True)
    results["ranks_accuracy"] = ranks_accuracy(out, cache)
    print(f"scale: compress 1 vs 2 ranks {results['ranks_accuracy']}", flush=True)
    results["teacher_cache"] = teacher_cache(cache)
    print("scale: teacher cache done", flush=True)
    results["fleet"] = fleet(out)
    print(f"scale: fleet {results['fleet']}", flush=True)
    results["checks"] = checks(results)
    return results


def checks(results: dict) -> dict:
    found = {}
    accuracy = results["ranks_accuracy"]
    gap = abs(accuracy["1"]["accuracy"] - accuracy["2"]["accuracy"])
    found[f"torchrun 2 ranks within 0.5 point of 1 process ({gap:.2f})"] = gap <= 0.5
    runs = results["teacher_cache"]["runs"]
    live = min(min(row["epoch_s"]) for row in runs["live"])
    cached = min(min(row["epoch_s"]) for row in runs["cached"])
    gap = abs(runs["live"][0]["accuracy"] - runs["cached"][0]["accuracy"])
    found[f"cached teacher within 0.5 point of the live one ({gap:.2f})"] = gap <= 0.5
    found[f"cached teacher faster per epoch ({live:.2f} s live, {cached:.2f} s cached)"] = cached < live
    fleet_found = results["fleet"]
    if "skipped" not in fleet_found:
        ratio = min(fleet_found["two"], fleet_found["two again"]) / min(fleet_found["one"], fleet_found["one again"])
        found[f"two ssh devices in under 1.5x one device's wall time ({ratio:.2f}x)"] = ratio < 1.5
    return found


def markdown(results: dict, machine: str, command: str) -> str:
    lines = [f"Measured with `{command}` on {machine}.", ""]
    speed = results["throughput"]
    lines += ["Distillation throughput, ResNet-18 student from a ResNet-18 teacher, synthetic 3x32x32, effective "
              f"batch {speed['1']['effective_batch']}, live teacher (best of two turns):", "",
              "| processes | threads each | samples/s | s per epoch |", "|---|---|---|---|"]
    for ranks in ("1", "2"):
        row = speed[ranks]
        lines.append(f"| {ranks} | {row['threads']} | {row['samples_per_s']:.1f} | {row['epoch_s']:.2f} |")
    accuracy = results["ranks_accuracy"]
    lines += ["", f"`{accuracy['command']}` against the same command without torchrun:", "",
              "| processes | val accuracy | wall s |", "|---|---|---|"]
    for ranks in ("1", "2"):
        lines.append(f"| {ranks} | {accuracy[ranks]['accuracy']:.2f} | {accuracy[ranks]['wall_s']:.1f} |")
    cache = results["teacher_cache"]
    lines += ["", f"Teacher cached on disk against the live teacher (ResNet-18 teacher at "
                  f"{cache['teacher_accuracy']:.2f}, demo CNN student, {cache['epochs']} epochs, two turns each):",
              "", "| teacher | s per epoch (each) | wall s | student accuracy |", "|---|---|---|---|"]
    for mode in ("live", "cached"):
        for row in cache["runs"][mode]:
            epochs = ", ".join(f"{s:.2f}" for s in row["epoch_s"])
            lines.append(f"| {mode} | {epochs} | {row['wall_s']:.1f} | {row['accuracy']:.2f} |")
    fleet_found = results["fleet"]
    if "skipped" in fleet_found:
        lines += ["", f"Fleet: skipped ({fleet_found['skipped']})."]
    else:
        lines += ["", f"`edgeslim validate` of two bundles, {fleet_found['runs']} timed runs each, on loopback ssh "
                      "devices (each its own sshd, 1 thread):", "", "| devices | wall s |", "|---|---|"]
        for name in ("one", "two", "one again", "two again"):
            lines.append(f"| {name} | {fleet_found[name]:.1f} |")
        lines.append("")
        lines.append(f"Side by side: {fleet_found['in_parallel']}")
    lines += ["", "| check | result |", "|---|---|"]
    lines += [f"| {name} | {'pass' if ok else '**fail**'} |" for name, ok in results["checks"].items()]
    return "\n".join(lines) + "\n"
