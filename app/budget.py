"""Compress to a budget: choose the pruning ratio by measuring size or latency, not by counting MACs.

Each probe prunes a copy of the model (no fine-tuning: it changes neither size nor speed), exports
it, applies the quantization the result will have, and measures the bytes of the ONNX model or the
p50 on the target device. Bisection finds the smallest ratio (the most accurate model) that fits.
"""
from __future__ import annotations

import copy
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgeslim.core.errors import ConfigError
from edgeslim.core.progress import log

GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
TOLERANCE = 0.10


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

    def __init__(self, base_model, data, budget: Budget, onnx_step, round_to: int, metric, target=None):
        """`target`: the latency budget's device from get_target, resolved once by the caller (a remote
        one costs a handshake); None for a size budget."""
        from edgeslim.devices.runner import BenchConfig

        self.base, self.data, self.budget, self.onnx_step, self.round_to = base_model, data, budget, onnx_step, round_to
        self.metric, self.target = metric, target
        self.bench = BenchConfig(runs=100, warmup=10)

    def measure(self, ratio: float) -> float:
        from edgeslim.compress import apply_step, make_step
        from edgeslim.export.onnx_export import ExportConfig, export_onnx
        from edgeslim.pipeline import StepContext

        sample = self.data.sample_inputs()
        ctx = StepContext(data=self.data, teacher=self.base, metric=self.metric, example_inputs=sample,
                          candidate="budget probe")
        model = copy.deepcopy(self.base).eval()
        if ratio > 0:
            model = apply_step(model, make_step("prune", {"ratio": ratio, "round_to": self.round_to}), ctx)
        proto, ctx.input_names, _ = export_onnx(model, sample, ExportConfig())
        if self.onnx_step is not None:
            proto = apply_step(proto, self.onnx_step, ctx)
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
        raise ConfigError(f"{flag} {budget.target:g} {budget.unit} cannot be met: the smallest this model gets by "
                          f"pruning is {measured[best]:.4g} {budget.unit}{where} (ratio {best:g}); ask for at least that")
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
