"""Latency-aware mixed precision: a layer runs in INT8 only where that is faster on the target.

Whole-model INT8 forms (int8_forms) are all or nothing: on a small CPU a convolution with three input
channels, or a depthwise one, can take longer as QLinearConv (with its layout transposes and the
quantize and dequantize around it) than as onnxruntime's float NCHWc kernel, while the large ones
gain. This module profiles the fastest integer form and the float parent on the target with
onnxruntime's profiler, charges each kernel to the layer (Conv, Gemm, MatMul) it belongs to, and
rebuilds that form with the layers that ran slower in INT8 kept in float. Those layers' weights are
still stored as int8 (the `weights` form's Cast and Mul, folded to float at load), so the file stays
small. The mixed model is kept only where it is measured, against the float parent and the whole
form in turns in one process, faster than the whole form and within the allowed accuracy drop.
"""
from __future__ import annotations

import re
from dataclasses import replace

from edgeslim.core.progress import log

LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
QDQ_FORMS = ("nncf", "ort")       # forms whose layers can be kept in float one by one
MARGIN = 0.10                     # a layer goes back to float when its INT8 kernels take 10 % longer
UP_STEPS = 8                      # how far up the graph a kernel looks for the layer it belongs to
# How onnxruntime names the kernels it makes: `<node>_token_<n>` (QDQ groups, layout transposes),
# `<output tensor>_nchwc` (NCHWc float convolutions); quantizers name Q/DQ `<tensor>_QuantizeLinear`.
_MADE = re.compile(r"(_token_\d+|_nchwc)+$")
_QDQ_SUFFIX = re.compile(r"_(Quantize|Dequantize)Linear$")


def refine(parent, built: dict, chosen: str, config, ctx, samples: list[dict]):
    """The model to keep: the chosen whole form, or a mixed one measured faster; `ctx.records['int8_form']`
    gains a `mixed` entry that says what was measured and why."""
    from edgeslim.compress.quantize import timing_sample

    record = ctx.records["int8_form"]
    base = _base_form(record, config)
    why_not = _why_not_tried(base, config, ctx)
    if why_not:
        record["mixed"] = {"tried": False, "why": why_not}
        return built[chosen]
    layers = per_layer_times(parent, built[base], ctx, timing_sample(ctx))
    slower = [name for name, row in layers.items() if row["in_float"]]
    record["mixed"] = {"tried": True, "base": base, "layers": layers, "in_float": slower}
    integer = [name for name, row in layers.items() if row.get("int8_us") is not None]
    if not slower or len(slower) == len(integer):
        record["mixed"].update(kept=False, why=f"no integer layer ran {MARGIN:.0%} slower in INT8" if not slower else
                               "every integer layer ran slower in INT8: the weights form is that model")
        _say(ctx.candidate, record["mixed"])
        return built[chosen]
    mixed = _rebuilt(parent, base, slower, config, ctx, samples)
    return _kept_if_faster(parent, built, chosen, mixed, record, config, ctx, timing_sample(ctx))


def _base_form(record: dict, config) -> str | None:
    """The fastest QDQ form within the allowed accuracy drop (the one worth mixing), or None."""
    if config.backend != "auto":
        return None
    rows = record["forms"]
    allowed = record.get("allowed_drop")
    parent_score = record["parent"].get("accuracy")
    usable = [name for name in QDQ_FORMS if name in rows and "x_parent" in rows[name]
              and (parent_score is None or allowed is None or parent_score - rows[name]["accuracy"] <= allowed + 1e-9)]
    return min(usable, key=lambda name: rows[name]["x_parent"]) if usable else None


def _why_not_tried(base: str | None, config, ctx) -> str | None:
    if config.backend != "auto":
        return f"--int8-backend {config.backend} asks for that form as it is"
    if ctx.profile is None:
        return (f"per-layer timing needs onnxruntime's profiler on the target, and {ctx.target.get('name')} "
                "is not this host; the choice is among whole-model forms")
    if base is None:
        return "no QDQ form (nncf, ort) was built, measured and within the allowed accuracy drop"
    return None


def per_layer_times(parent, quantized, ctx, sample: dict) -> dict:
    """{layer: {"int8_us", "float_us", "in_float"}} for the layers the quantized model runs as integer kernels."""
    int8_us = layer_times(ctx.profile(quantized, sample), quantized.graph)
    float_us = layer_times(ctx.profile(parent, sample), parent.graph)
    integer_layers = _integer_layers(quantized.graph)
    rows = {}
    for node in parent.graph.node:
        if node.op_type not in LAYER_OPS or node.name not in integer_layers:
            continue
        mine, theirs = int8_us.get(node.name), float_us.get(node.name)
        rows[node.name] = {"op": node.op_type, "int8_us": _rounded(mine), "float_us": _rounded(theirs),
                           "in_float": bool(mine is not None and theirs is not None and mine > theirs * (1 + MARGIN))}
    return rows


def _rounded(value):
    return None if value is None else round(value, 1)


def _integer_layers(graph) -> set[str]:
    """Layers whose weight comes through a DequantizeLinear: the ones a QDQ form quantized."""
    dequantized = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    return {node.name for node in graph.node
            if node.op_type in LAYER_OPS and len(node.input) > 1 and node.input[1] in dequantized}


def layer_times(kernel_us: dict, graph) -> dict[str, float]:
    """Each layer's share of the profile: the time of the kernels that resolve to it (see `_layer_of`)."""
    nodes = {node.name: node for node in graph.node}
    producers = {output: node for node in graph.node for output in node.output}
    times: dict[str, float] = {}
    for kernel, spent in kernel_us.items():
        layer = _layer_of(_node_of(kernel, nodes, producers), producers)
        if layer is not None:
            times[layer] = times.get(layer, 0.0) + spent
    return times


def _node_of(kernel: str, nodes: dict, producers: dict):
    """The graph node a profiled kernel came from: by its name, or the name onnxruntime derived it from
    (a node's, or the output tensor's of a fused node; a Q/DQ named after the tensor it converts)."""
    made = _MADE.sub("", kernel)
    for name in (kernel, made):
        if name in nodes:
            return nodes[name]
    for tensor in (made, _QDQ_SUFFIX.sub("", made)):
        if tensor in producers:
            return producers[tensor]
    return None


def _layer_of(node, producers: dict) -> str | None:
    """The layer a node belongs to: itself, or the nearest layer upstream along first inputs (the
    activation, quantize or dequantize that follows a convolution belongs to that convolution)."""
    for _ in range(UP_STEPS):
        if node is None:
            return None
        if node.op_type in LAYER_OPS:
            return node.name
        node = producers.get(node.input[0]) if node.input else None
    return None


def _rebuilt(parent, base: str, in_float: list[str], config, ctx, samples: list[dict]):
    """The base form again with `in_float` (and what accuracy control kept) in float, their weights int8-stored."""
    from edgeslim.compress.int8_forms import build_form, weights_only
    from edgeslim.compress.quantize import nncf_ptq

    controlled = (ctx.records.get("accuracy_control") or {}).get("in_float") or []
    if base == "nncf":  # NNCF's own run again, without redoing accuracy control: its choices are kept
        model = nncf_ptq(parent, samples, config, [*controlled, *in_float])
    else:
        model = build_form(base, parent, samples, replace(config, in_float=[*config.in_float, *in_float]), ctx)
    return weights_only(model, seven_bit=config.overflow_fix == "enable", keep=set(config.in_float) | set(controlled))


def _kept_if_faster(parent, built: dict, chosen: str, mixed, record: dict, config, ctx, sample: dict):
    """Score and time the mixed model against the parent and the chosen form; keep it only where it wins."""
    from edgeslim.compress.int8_forms import TIE
    from edgeslim.compress.sensitivity import evaluate_proto

    entry = record["mixed"]
    entry["size_bytes"] = mixed.ByteSize()
    parent_score, allowed = record["parent"].get("accuracy"), record.get("allowed_drop")
    if parent_score is not None:
        entry["accuracy"] = evaluate_proto(mixed, ctx.data.val, ctx.input_names, ctx.metric)
    timing = ctx.measure({"parent": parent, chosen: built[chosen], "mixed": mixed}, sample)
    entry.update(x_parent=timing["x_parent"]["mixed"], chosen_x_parent=timing["x_parent"][chosen],
                 p50_ms=timing["p50_ms"]["mixed"])
    too_lossy = (parent_score is not None and allowed is not None
                 and parent_score - entry["accuracy"] > allowed + 1e-9)
    faster = entry["x_parent"] < entry["chosen_x_parent"] * (1 - TIE)  # a win within timing noise is no win
    entry["kept"] = faster and not too_lossy
    entry["why"] = ("faster than the whole form" if entry["kept"] else
                    "outside the allowed accuracy drop" if too_lossy else
                    f"not {TIE:.0%} faster than {chosen}")
    _say(ctx.candidate, entry, chosen)
    if not entry["kept"]:
        return built[chosen]
    record.update(chosen="mixed", why=(f"{len(entry['in_float'])} of {len(entry['layers'])} integer layers of "
                                       f"{entry['base']} ran faster in float and were kept there "
                                       f"({entry['x_parent']:.2f}x the float parent)"))
    return mixed


def _say(candidate: str, entry: dict, chosen: str | None = None) -> None:
    layers = entry.get("layers") or {}
    text = f"{candidate}: per-layer timing of {entry.get('base')}: {len(entry.get('in_float', []))} of {len(layers)} "
    text += "integer layers ran slower in INT8 than in float"
    if "x_parent" in entry:
        text += (f"; mixed {entry['x_parent']:.2f}x the float parent against {chosen} "
                 f"{entry['chosen_x_parent']:.2f}x -> {'kept' if entry['kept'] else 'not kept: ' + entry['why']}")
    log(text)
