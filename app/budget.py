"""Compress to a budget: choose the pruning ratio by measuring size or latency, not by counting MACs.

Each probe prunes a copy of the model (no fine-tuning: it changes neither size nor speed), exports
it, applies the quantization the result will have, and measures the bytes of the ONNX model or the
p50 on the target device. Bisection finds the smallest ratio (the most accurate model) that fits.
"""
from __future__ import annotations

import copy
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from edgeslim.core.errors import ConfigError
from edgeslim.core.progress import log
from edgeslim.plan import OptionConflict, PlanOptions, plan_steps

GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
TOLERANCE = 0.10
PROBE_SAMPLES = 32          # calibration samples of a probe's quantization: its size and speed need no more


@dataclass
class Budget:
    kind: str                   # "size" (MB) or "latency" (ms)
    target: float
    device: str = "cpu"
    tolerance: float = TOLERANCE
    probes: list = field(default_factory=list)

    def __post_init__(self):
        if not self.target > 0:
            flag = "--target-size" if self.kind == "size" else "--target-latency"
            unit = "MB" if self.kind == "size" else "ms"
            raise ConfigError(f"{flag} {self.target:g} is not a budget: it must be a positive number of {unit}")

    @property
    def unit(self) -> str:
        return "MB" if self.kind == "size" else "ms"

    def to_dict(self) -> dict:
        return asdict(self)


class Prober:
    """Measures what the compressed model would weigh or take at a given pruning ratio."""

    def __init__(self, base_model, data, budget: Budget, options: PlanOptions, metric, target=None):
        """`options`: the plan whose pruning ratio is searched; `target`: the latency budget's device
        from get_target, resolved once by the caller (a remote one costs a handshake); None for a size budget."""
        from edgeslim.devices.runner import BenchConfig

        self.base, self.data, self.budget, self.options = base_model, data, budget, options
        self.metric, self.target = metric, target
        self.bench = BenchConfig(runs=100, warmup=10)

    def measure(self, ratio: float) -> float:
        from edgeslim.build import StepContext
        from edgeslim.compress import apply_step
        from edgeslim.core.metrics import wanted_outputs
        from edgeslim.export.onnx_export import ExportConfig, export_onnx

        sample = self.data.sample_inputs()
        ctx = StepContext(data=self.data, teacher=self.base, metric=self.metric, example_inputs=sample,
                          candidate="budget probe")
        steps = probe_steps(plan_steps(replace(self.options, prune=ratio)))
        model = copy.deepcopy(self.base).eval()
        for step in (s for s in steps if s.stage == "torch"):
            model = apply_step(model, step, ctx)
        proto, ctx.input_names, outputs = export_onnx(model, sample, ExportConfig())
        if self.data.val:  # the steps score the probe (an INT8 form's accuracy): a metric naming no output fails here
            wanted_outputs(self.metric, outputs)
        for step in (s for s in steps if s.stage == "onnx"):
            proto = apply_step(proto, step, ctx)
        value = self._size_mb(proto) if self.budget.kind == "size" else self._latency_ms(proto)
        self.budget.probes.append({"ratio": round(ratio, 4), self.budget.kind: value})
        log(f"budget probe: ratio {ratio:.3f} -> {value:.4g} {self.budget.unit} (target {self.budget.target:g})")
        return value

    @staticmethod
    def _size_mb(proto) -> float:
        return len(proto.SerializeToString()) / 1e6

    def _latency_ms(self, proto) -> float:
        from edgeslim.export.bundle import write_unverified_bundle

        with tempfile.TemporaryDirectory() as tmp:
            bundle = write_unverified_bundle(proto, Path(tmp) / "probe", "probe")
            return self.target.latency(bundle, self.bench)["p50_ms"]


def probe_steps(steps: list) -> list:
    """What a probe applies in place of the planned `steps`: pruning as planned, and a cheap quantization
    of the same size and speed; fine-tuning (distillation, QAT's training) changes neither."""
    from edgeslim.compress import make_step

    probe = []
    for step in steps:
        if step.name == "int8":
            # With backend auto the weights form, whose size is INT8's and whose speed is float's
            # (the final bundle's auto choice is never slower).
            probe.append(replace(step, subset_size=PROBE_SAMPLES, max_accuracy_drop=None,
                                 backend="weights" if step.backend == "auto" else step.backend))
        elif step.name == "qat":
            # QAT exports integer kernels, as NNCF's post-training quantization does.
            probe.append(make_step("int8", {"subset_size": PROBE_SAMPLES, "backend": "nncf",
                                            "overflow_fix": step.overflow_fix}))
        elif step.name != "distill":
            probe.append(step)
    return probe


def search_ratio(prober: Prober, steps: int = 5) -> float:
    """The smallest ratio whose measured size or latency fits the budget.

    A coarse scan from 0 upwards finds the first ratio that fits, then bisection narrows the
    bracket below it. Not a bisection over the whole range: with channel rounding, torch-pruning
    leaves a layer whole where rounding would keep none of its channels, so at high ratios the
    model can grow again and the measure is not monotonic.
    """
    budget = prober.budget
    previous, measured = 0.0, {}
    for ratio in GRID:
        measured[ratio] = prober.measure(ratio)
        if measured[ratio] <= budget.target:
            if ratio == 0.0:
                log("budget: the unpruned model already fits")
                return 0.0
            break
        previous = ratio
    else:
        best = min(measured, key=measured.get)
        flag = "--target-size" if budget.kind == "size" else "--target-latency"
        where = "" if budget.kind == "size" else f" on {budget.device}"
        raise ConfigError(f"{flag} {budget.target:g} {budget.unit} cannot be met: the smallest this model gets "
                          f"by pruning is {measured[best]:.4g} {budget.unit}{where} (ratio {best:g}); "
                          "ask for at least that")
    low, high = previous, ratio  # low does not fit, high fits
    for _ in range(steps):
        middle = (low + high) / 2
        if prober.measure(middle) <= budget.target:
            high = middle
        else:
            low = middle
    return high


def verdict(budget: Budget, measured: float, ratio: float | None = None) -> dict:
    """How far the result lands from the budget at the chosen `ratio`, and whether that is within
    the tolerance; `why` says what kept it out."""
    distance = measured / budget.target - 1.0
    result = {"target": budget.target, "unit": budget.unit, "measured": measured, "distance": distance,
              "within_tolerance": abs(distance) <= budget.tolerance, "over_budget": distance > budget.tolerance}
    if result["over_budget"] and budget.probes and ratio is not None:
        probe = min(budget.probes, key=lambda p: abs(p["ratio"] - ratio))
        result["why"] = (f"the probe at ratio {probe['ratio']:g} measured {probe[budget.kind]:.4g} {budget.unit}, "
                         "within the budget, and the result is pruned at that ratio: "
                         + (f"latency on {budget.device} varies between runs by more than the "
                            f"{budget.tolerance:.0%} tolerance; re-measure with `edgeslim bench --runs 1000` "
                            "or on a quieter host" if budget.kind == "latency"
                            else "the steps after pruning added bytes the probe did not have"))
    elif distance < -budget.tolerance:
        fitting = sorted((p["ratio"], p[budget.kind]) for p in budget.probes if p[budget.kind] <= budget.target)
        if fitting and fitting[0][0] == 0.0:
            result["why"] = "the unpruned model already fits well under the budget"
        else:
            result["why"] = ("no pruning ratio lands closer: channel counts move in steps of the rounding "
                             "multiple, and the probes jump from over the budget to this far under it")
    return result


def budget_from_flags(target_size: float | None, target_latency: float | None, device: str,
                      options: PlanOptions) -> Budget | None:
    """The budget `compress --target-size/--target-latency` asks for, or None for a plain build."""
    if target_size is None and target_latency is None:
        return None
    if target_size is not None and target_latency is not None:
        raise OptionConflict("--target-size and --target-latency are exclusive; give one budget")
    if options.prune:
        raise OptionConflict("--prune and a --target-* budget are exclusive: the budget chooses the ratio")
    return Budget("size", target_size) if target_size is not None else Budget("latency", target_latency, device)


def compress_to_budget(job, options: PlanOptions, budget: Budget) -> dict:
    """Measure probes to choose the pruning ratio, then build the bundle `options` plan at that ratio.

    `job` is an edgeslim.build.BuildJob. Returns the manifest, whose metrics["budget"] says which ratio
    was chosen, what the probes measured, and how close the bundle landed (measured on the staged
    bundle, so that it is written once).
    """
    from edgeslim.build import build_bundle
    from edgeslim.devices.profiles import get_profile
    from edgeslim.devices.targets import get_target

    plan_steps(options)  # bad or conflicting options fail before any probe
    target = get_target(budget.device) if budget.kind == "latency" else None
    if budget.kind == "latency" and not budget.device.startswith("ssh://"):
        options = replace(options, round_to=max(options.round_to, get_profile(budget.device).channel_multiple()))
    model, data, metric = job.load()
    ratio = search_ratio(Prober(model, data, budget, options, metric, target))
    steps = plan_steps(replace(options, prune=round(ratio, 4)))
    return build_bundle(model, steps, data, job.out, job.name, metric, job.export, force=job.force,
                        device=job.device, finish=_landed(budget, target, ratio, options.round_to),
                        source=job.source(model, data), measure_source=True)


def _landed(budget: Budget, target, ratio: float, round_to: int):
    """The staged bundle's size or latency against the budget, as the manifest's metrics["budget"]."""
    def finish(staging: Path, manifest: dict) -> dict:
        from edgeslim.devices.runner import BenchConfig

        measured = (manifest["metrics"]["size_bytes"] / 1e6 if budget.kind == "size"
                    else target.latency(staging, BenchConfig(runs=300, warmup=30))["p50_ms"])
        return {"budget": {**budget.to_dict(), **verdict(budget, measured, ratio), "ratio": ratio,
                           "round_to": round_to}}

    return finish
