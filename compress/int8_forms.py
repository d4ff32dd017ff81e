"""The forms an INT8 model can take, and the choice among them by measuring on the target.

- `nncf`: NNCF's post-training quantization (fast bias correction, transformer rules, accuracy
  control), reshaped by `ortify` into the QDQ groups onnxruntime's CPU provider fuses.
- `ort`: onnxruntime's own quantize_static (QDQ, per-channel weights, MinMax calibration).
- `dynamic`: int8 MatMul weights with activations quantized at run time (transformers, LSTMs).
- `weights`: int8 weights that onnxruntime expands to float once, at load (a Cast and a Mul of
  constants, which its constant folding removes): the size of INT8 at the speed of float, for
  targets where integer kernels do not pay.

With backend `auto`, every applicable form is built, scored on the val split and timed against
the float parent on the target, alternating in one process; the fastest form within the allowed
accuracy drop wins, and among forms as fast as it (within TIE) the smallest. The weights form
bounds the outcome: a compressed model is never slower than its parent by choice.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgeslim.core.progress import log, progress, warn

FORMS = ("nncf", "ort", "dynamic", "weights")
BACKENDS = ("auto", *FORMS)
TIE = 0.02                  # forms within 2 % of the fastest count as equally fast
SLOWER = 1.05               # past 5 % over the parent, a form is slower than float
DEFAULT_RELATIVE_DROP = 0.01  # without --max-accuracy-drop: 1 % of the parent's score
DYNAMIC_OPS = ["MatMul", "Attention", "LSTM", "Gather"]  # not Conv: ConvInteger is slower than float
# onnxruntime's quantizers type each tensor by ONNX shape inference, which cannot type the outputs of
# com.microsoft ops (a graph fused by the optimize step: BiasGelu, SkipLayerNormalization); those are
# float (onnx.TensorProto.FLOAT).
FLOAT_BY_DEFAULT = {"DefaultTensorType": 1}


# -- what the target's instruction set asks for ---------------------------------------------------

def int8_settings(target: dict, overflow_fix: str) -> dict:
    """Weight range, signedness and granularity for the target, recorded in the manifest.

    x86 without VNNI multiplies uint8 by int8 with vpmaddubsw, which saturates int16 pair sums:
    weights confined to 7 bits cannot overflow. VNNI (x86) and the dot-product extension (ARM) sum
    in int32, so the full 8-bit range is safe and a little more precise there.
    """
    features = set(target.get("features") or ())
    wide_sums = bool(features & {"avx512_vnni", "avx_vnni", "asimddp"})
    known = bool(features)
    if overflow_fix == "auto":
        overflow_fix = "disable" if wide_sums else "enable"
    why = ("the target sums int8 products in int32 (VNNI or ARM dot product)" if wide_sums else
           "x86 without VNNI saturates int16 pair sums" if known else
           "the target's instruction set is unknown here, so the range that is safe everywhere")
    return {"target": target.get("name"), "features": sorted(features), "overflow_fix": overflow_fix,
            "weights": f"int8 per-channel symmetric, {'7-bit' if overflow_fix == 'enable' else '8-bit'} range",
            "activations": "uint8 per-tensor asymmetric", "why": why}


def forms_for(backend: str, model) -> list[str]:
    if backend != "auto":
        return [backend]
    has_matmul = any(node.op_type in ("MatMul", "LSTM") for node in model.graph.node)
    return ["nncf", "ort", *(["dynamic"] if has_matmul else []), "weights"]


# -- building each form ---------------------------------------------------------------------------

def build_form(form: str, model, samples: list[dict], config, ctx):
    return _BUILDERS[form](model, samples, config, ctx)


def _nncf(model, samples, config, ctx):
    from edgeslim.compress.quantize import accuracy_controlled_int8, nncf_ptq

    if config.max_accuracy_drop is not None:
        return accuracy_controlled_int8(model, samples, config, ctx)
    return nncf_ptq(model, samples, config)


def _ort(model, samples, config, ctx):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Samples(CalibrationDataReader):
        def __init__(self, advance):
            self.pending, self.advance = iter(samples), advance

        def get_next(self):
            item = next(self.pending, None)
            if item is not None:
                self.advance()
            return item

    def quantize(source, target):
        with progress("onnxruntime calibration", total=len(samples), unit="samples") as advance:
            quantize_static(source, target, Samples(advance), quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=config.overflow_fix == "enable", activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=list(config.in_float),
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                                           **FLOAT_BY_DEFAULT})

    return through_files(model, quantize)


def _dynamic(model, samples, config, ctx):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgeslim.compress.tables import blockwise_tables

    def quantize(source, target):
        quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True,
                         reduce_range=config.overflow_fix == "enable", op_types_to_quantize=DYNAMIC_OPS,
                         nodes_to_exclude=list(config.in_float), extra_options=FLOAT_BY_DEFAULT)

    quantized = through_files(model, quantize)
    return blockwise_tables(quantized, model)[0]


def through_files(model, quantize, prepare: bool = True):
    """onnxruntime's quantizers read and write files; `prepare`: shape inference first, as they advise."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp, _working_in(Path(tmp)):
        source, target = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, source)
        prepared = _prepared(source, Path(tmp) / "prepared.onnx") if prepare else source
        quantize(str(prepared), str(target))
        return onnx.load(target)


@contextmanager
def _working_in(folder: Path):
    """onnxruntime's symbolic shape inference saves `sym_shape_infer_temp.onnx` and its external data
    (77 MB for all-MiniLM-L6-v2) into the working directory when it cannot infer every shape, and
    leaves them: the user's folder. Run the quantizers inside our temporary folder instead."""
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


@contextmanager
def quiet_logging(level: int = 30):
    """onnxruntime's Python tools log every node they skip (the INT4 quantizer at INFO, the transformer
    fusions a warning per pattern not found); edgeslim prints its own progress. Silences records up to
    `level` (WARNING) while they run."""
    import logging

    previous = logging.root.manager.disable
    logging.disable(level)
    try:
        yield
    finally:
        logging.disable(previous)


def _prepared(source: Path, prepared: Path) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=False)
    except Exception:  # noqa: BLE001 - the pre-pass is an aid; quantization works without it
        return source
    return prepared


def _weights(model, samples, config, ctx):
    return weights_only(model, seven_bit=config.overflow_fix == "enable", keep=set(config.in_float))


def weights_only(model, seven_bit: bool, keep: set = frozenset()):
    """Store each Conv, Gemm and MatMul weight (and embedding tables) as int8 with a per-channel
    scale, expanded by Cast and Mul: onnxruntime folds those constants at load, so the session
    runs the float graph while the file holds int8."""
    import copy

    from onnx import TensorProto, helper, numpy_helper

    model = copy.deepcopy(model)
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    limit = 63 if seven_bit else 127
    expanders = []
    for name, axis in _weight_axes(graph, initializers, keep).items():
        weight = numpy_helper.to_array(initializers[name]).astype(np.float32)
        reduce = tuple(i for i in range(weight.ndim) if i != axis)
        scale = np.abs(weight).max(axis=reduce, keepdims=True) / limit
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        graph.initializer.remove(initializers[name])
        graph.initializer.extend([numpy_helper.from_array(np.round(weight / scale).astype(np.int8), f"{name}_int8"),
                                  numpy_helper.from_array(scale, f"{name}_scale")])
        expanders += [helper.make_node("Cast", [f"{name}_int8"], [f"{name}_f32"], to=TensorProto.FLOAT,
                                       name=f"{name}_expand_cast"),
                      helper.make_node("Mul", [f"{name}_f32", f"{name}_scale"], [name], name=f"{name}_expand_scale")]
    nodes = expanders + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def _weight_axes(graph, initializers: dict, keep: set) -> dict:
    """Float weights worth storing as int8, with the axis their scales run along."""
    from onnx import TensorProto

    axes = {}
    for node in graph.node:
        if node.name in keep:
            continue
        slots = {"Conv": (1, 0), "ConvTranspose": (1, 1), "Gemm": (1, None), "MatMul": (1, -1), "Gather": (0, 0)}
        if node.op_type not in slots or len(node.input) <= slots[node.op_type][0]:
            continue
        index, axis = slots[node.op_type]
        tensor = initializers.get(node.input[index])
        if tensor is None or tensor.data_type != TensorProto.FLOAT or len(tensor.dims) < 2:
            continue
        if axis is None:  # Gemm: output channels are rows of B, or columns when transB is unset
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            axis = 0 if trans_b else 1
        axes[tensor.name] = axis % len(tensor.dims)
    return axes


_BUILDERS = {"nncf": _nncf, "ort": _ort, "dynamic": _dynamic, "weights": _weights}


# -- choosing -------------------------------------------------------------------------------------

def choose(parent, built: dict, config, ctx, sample: dict) -> str:
    """The name of the form to keep: measured on the target against the parent; the table goes in the manifest."""
    from edgeslim.compress.sensitivity import evaluate_proto

    rows = {name: {"size_bytes": proto.ByteSize()} for name, proto in built.items()}
    parent_score = None
    if ctx.data.val:
        parent_score = evaluate_proto(parent, ctx.data.val, ctx.input_names, ctx.metric)
        for name, proto in built.items():
            rows[name]["accuracy"] = evaluate_proto(proto, ctx.data.val, ctx.input_names, ctx.metric)
    timing = _timed(parent, built, ctx, sample)
    for name, p50 in timing.get("p50_ms", {}).items():
        if name in rows:
            rows[name].update(p50_ms=p50, x_parent=timing["x_parent"][name])
    chosen, why = _pick(rows, parent_score, config)
    record = {"backend": config.backend, "chosen": chosen, "why": why, "forms": rows,
              "parent": {"accuracy": parent_score, "size_bytes": parent.ByteSize(),
                         **({"p50_ms": timing["p50_ms"]["parent"]} if "p50_ms" in timing else {})},
              "measured_on": timing.get("where"),
              **({"allowed_drop": _allowed_drop(config, parent_score)} if parent_score is not None else {})}
    ctx.record(int8_form=record)
    _say(ctx.candidate, record)
    return chosen


def _timed(parent, built: dict, ctx, sample: dict) -> dict:
    if ctx.measure is None:
        return {"where": f"{ctx.target.get('name')}: not measurable from this host (estimated)"}
    return ctx.measure({"parent": parent, **built}, sample)


def _allowed_drop(config, parent_score: float) -> float:
    from edgeslim.compress.sensitivity import allowed_drop

    if config.max_accuracy_drop is not None:
        return allowed_drop(config.max_accuracy_drop, config.relative, parent_score)
    return DEFAULT_RELATIVE_DROP * abs(parent_score)


def _pick(rows: dict, parent_score, config) -> tuple[str, str]:
    names = list(rows)
    if len(names) == 1:
        return names[0], f"--int8-backend {names[0]}"
    accepted = names
    if parent_score is not None:
        allowed = _allowed_drop(config, parent_score)
        accepted = [n for n in names if parent_score - rows[n]["accuracy"] <= allowed + 1e-9]
        if not accepted:
            best = max(names, key=lambda n: rows[n]["accuracy"])
            return best, f"no form kept the accuracy drop within {allowed:.3g}; {best} lost least"
    if not all("x_parent" in rows[n] for n in accepted):
        # Not measurable from here: integer kernels where the target sums int8 products in int32
        # (the settings then give full-range weights), else int8 storage at float speed.
        integer_pays = config.overflow_fix == "disable"
        order = ["nncf", "ort", "dynamic", "weights"] if integer_pays else ["weights", "dynamic", "nncf", "ort"]
        chosen = next(n for n in order if n in accepted)
        return chosen, "not measured on the target: " + ("it has int8 dot products" if integer_pays
                                                          else "int8 storage at float speed")
    # Speed as each form's time over the parent's, paired round by round (sdk.stats.paired_ratios).
    fastest = min(rows[n]["x_parent"] for n in accepted)
    tied = [n for n in accepted if rows[n]["x_parent"] <= fastest * (1 + TIE)]
    chosen = min(tied, key=lambda n: rows[n]["size_bytes"])
    return chosen, (f"fastest within the allowed accuracy drop ({rows[chosen]['x_parent']:.2f}x the float parent)"
                    + (f", the smallest of {len(tied)} within {TIE:.0%} of each other" if len(tied) > 1 else ""))


def _say(candidate: str, record: dict) -> None:
    parts = []
    for name, row in record["forms"].items():
        figures = [f"{row['size_bytes'] / 1024:.0f} KB"]
        if "accuracy" in row:
            figures.append(f"acc {row['accuracy']:.2f}")
        if "x_parent" in row:
            figures.append(f"{row['x_parent']:.2f}x float")
        parts.append(f"{name} ({', '.join(figures)})")
    log(f"{candidate}: int8 forms: {'; '.join(parts)} -> {record['chosen']}: {record['why']}")
    row = record["forms"][record["chosen"]]
    if row.get("x_parent", 0) > SLOWER:
        warn(f"{candidate}: the INT8 model runs {row['x_parent']:.2f}x the float parent's time on "
             f"{record['measured_on']}; with --int8-backend auto edgeslim keeps the fastest form")


def resolved(config, settings: dict):
    """The config with overflow_fix decided by the target (what the quantizers read)."""
    return replace(config, overflow_fix=settings["overflow_fix"])
