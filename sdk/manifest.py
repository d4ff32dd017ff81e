"""The manifest document, edgeslim-bundle/1, as typed dataclasses (see edgeslim.core.documents).

Every reader of a manifest (the SDK, `inspect`, `validate`, `bench`) gets one whose fields have
the types below, or a BundleError naming the first that does not. The manifest is open: a newer
edgeslim may add keys, and an older one reads past them. The build-time findings a report shows
(accuracy control, layer sensitivity, the INT8 form) are typed here once, for manifests and
reports alike.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from edgeslim.core.documents import json_schema

BUNDLE_FORMAT = "edgeslim-bundle/1"
_TEXT = {"minLength": 1}


@dataclass
class TensorEntry:
    """One input or output of the model: its name, numpy dtype name, shape (names for symbolic dims) and batch axis."""

    name: str = field(metadata=_TEXT)
    dtype: str = field(metadata={**_TEXT, "description": "A numpy dtype name: float32, int64, bool, ..."})
    shape: list[int | str | None] = field(metadata={"description": "Whole numbers, or names for symbolic dims."})
    batch_axis: int = field(default=0, metadata={
        "minimum": 0, "description": "The axis that follows the batch: 1 for a time-major (T, N, C) output. "
                                     "Absent in older manifests: 0."})
    example_shape: list[int] | None = field(default=None, metadata={
        "description": "The shape of the example the model was exported with, where recorded: benchmarks give "
                       "a symbolic dim other than the batch (a sequence) its size."})


@dataclass
class StepRecord:
    """One compression step as it was applied: its name and its parameters."""

    OPEN: ClassVar[bool] = True
    step: str = field(metadata=_TEXT)
    version: int = 1


@dataclass
class AccuracyControl:
    """INT8 with layers returned to float, most sensitive first, until the accuracy drop was allowed."""

    OPEN: ClassVar[bool] = True
    met: bool
    accuracy: float
    fp32_accuracy: float
    drop: float
    allowed_drop: float
    layers: int
    layers_int8: int
    in_float: list[str] = field(default_factory=list)
    max_accuracy_drop: float | None = None
    relative: bool = False


@dataclass
class SensitivityRow:
    """One quantizable layer: the accuracy with it alone in float (and alone quantized, where measured)."""

    OPEN: ClassVar[bool] = True
    layer: str
    op: str
    alone_in_float: float
    gain_in_float: float
    alone_quantized: float | None = None
    drop_quantized: float | None = None


@dataclass
class Int8Form:
    """The INT8 form chosen at build time, and why."""

    OPEN: ClassVar[bool] = True
    chosen: str | None = None
    why: str = ""
    backend: str | None = None
    forms: dict[str, Any] = field(default_factory=dict)


@dataclass
class KeptWhole:
    """A module pruning left whole, and why (a recurrent layer, an attention it cannot split by heads)."""

    OPEN: ClassVar[bool] = True
    module: str = field(metadata=_TEXT)
    reason: str = ""


@dataclass
class EpochRecord:
    """One epoch of distillation or QAT: mean train loss, val metric, learning rate at its end, seconds;
    `simulated`: the quantization the epoch trained and was scored through (quantization-aware distillation's
    dynamic_int8), absent for a float epoch."""

    OPEN: ClassVar[bool] = True
    epoch: int = field(metadata={"minimum": 1})
    loss: float
    val: float | None = None
    lr: float | None = None
    seconds: float | None = None
    simulated: str | None = None


@dataclass
class SourceModel:
    """The model a bundle was built from: its spec, weights (file name and sha256; none: the factory's own
    initial weights), parameter count, and the data it was measured on (spec and sha256 of the val split)."""

    OPEN: ClassVar[bool] = True
    model: str | None = field(default=None, metadata={"description": "The model spec, as given."})
    weights: str | None = field(default=None, metadata={
        "description": "The weights file's name; null: the factory's initial weights (or, with `trained`, "
                       "weights trained from them)."})
    weights_sha256: str | None = field(default=None, metadata={"description": "Of the weights file."})
    trained: bool = field(default=False, metadata={
        "description": "`edgeslim run` trained the model per its recipe before building the bundle."})
    params: int | None = field(default=None, metadata={
        "minimum": 0, "description": "Parameters of the source model, before any compression."})
    data: str | None = field(default=None, metadata={"description": "The data spec, as given."})
    data_sha256: str | None = field(default=None, metadata={
        "description": "Of the val split's arrays (dtype, shape and bytes of each input and label batch)."})


@dataclass
class BuildMetrics:
    """What was measured when the bundle was built."""

    OPEN: ClassVar[bool] = True
    # Absent when not measured, never null: readers format these when the key is there.
    size_bytes: int = field(default=None, metadata={"minimum": 0})
    params: int = field(default=None, metadata={"minimum": 0})
    accuracy: float = None
    parity: dict[str, Any] = field(default_factory=dict)
    build_s: float | None = None
    int8_coverage: dict[str, Any] | None = None
    int8_form: Int8Form | None = None
    int8_settings: dict[str, Any] | None = None
    int8_kernels: dict[str, Any] | None = None
    accuracy_control: AccuracyControl | None = None
    sensitivity: list[SensitivityRow] | None = None
    budget: dict[str, Any] | None = None
    kept_whole: list[KeptWhole] | None = None
    prune_importance: dict[str, Any] | None = field(default=None, metadata={
        "description": "How pruning ranked channels: the importance used (l1, l2, output) and why, and whether "
                       "channels were ranked over all layers at once (global)."})
    int4: dict[str, Any] | None = field(default=None, metadata={
        "description": "The int4 step: MatMul weights as MatMulNBits, block size, size, accuracy and speed "
                       "against the float parent."})
    speed_note: str | None = field(default=None, metadata={
        "description": "Why this bundle is kept although it runs slower than its float parent on its target "
                       "(a size mode the user asked for)."})
    graph_optimization: dict[str, Any] | None = field(default=None, metadata={
        "description": "The optimize step: the ops onnxruntime fused, whether the fused graph was kept, and why not."})
    distill_history: list[EpochRecord] | None = None
    qat_history: list[EpochRecord] | None = None
    distill_run: dict[str, Any] | None = field(default=None, metadata={
        "description": "How distillation ran: ranks (torchrun processes), backend (gloo, nccl), precision (fp32, "
                       "bf16) and teacher (cached: run once, outputs read from disk; live: run every step)."})
    qat_run: dict[str, Any] | None = field(default=None, metadata={"description": "As distill_run, for QAT."})
    source: dict[str, Any] | None = field(default=None, metadata={
        "description": "The unchanged model's fp32 export that compress states its gain against: size_bytes, "
                       "accuracy."})


@dataclass
class Manifest:
    """manifest.json of an edgeslim bundle: what the model takes and gives, the sha256 of every file it
    needs, how it was compressed and measured, and which versions made it."""

    OPEN: ClassVar[bool] = True
    format: str = field(metadata={"const": BUNDLE_FORMAT})
    name: str = field(metadata=_TEXT)
    inputs: list[TensorEntry]
    outputs: list[TensorEntry]
    sha256: dict[str, str] = field(metadata={"description": "Each file the model needs, by its path in the bundle."})
    compression: list[StepRecord] = field(default_factory=list)
    metrics: BuildMetrics = field(default_factory=BuildMetrics)
    ops: dict[str, int] = field(default_factory=dict)
    created_with: dict[str, str | None] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    source_model: SourceModel | None = None


def manifest_schema() -> dict:
    return json_schema(Manifest, title="edgeslim bundle manifest")
