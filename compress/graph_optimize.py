"""Transformer graph optimization: onnxruntime's fusions (Attention, SkipLayerNormalization, BiasGelu, ...).

`onnxruntime.transformers.optimizer.optimize_model` matches the subgraphs a transformer exports to
and replaces them with onnxruntime's fused contrib ops. It runs on the float graph, before the
quantization step (dynamic INT8 then quantizes a fused Attention as QAttention).

Measured, never assumed: the fused graph must give the input graph's outputs on real batches (a
wrongly detected head count gives other numbers) and must not run slower on the target, timed in
the form the later steps give it (dynamic INT8 where one quantizes that way); otherwise the step
hands back its input unchanged and the manifest's `graph_optimization` says why.

Two fused forms are timed against each other: layer norms after a residual fused into
SkipLayerNormalization, or left apart with the residual written as Sum (residual_sums says why).

Head count: onnxruntime reads it from the Reshape that splits Q into heads. Hugging Face models
write that shape as (batch, sequence, -1, head_size), which it cannot read; `attention_dims` then
finds it from the same Reshape and the width of the Q projection (a pruned model's head count too).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from edgeslim.compress.registry import StepConfig, register_step, require
from edgeslim.core.progress import log

# The model types of onnxruntime.transformers.optimizer.MODEL_TYPES for exported torch models that
# edgeslim offers (app/plan.py keeps the same tuple for the CLI, which must not import onnxruntime).
MODEL_TYPES = ("bert", "bart", "clip", "gpt2", "swin", "t5", "vit")
CHECK_BATCHES = 4
# The fused forms timed against each other: layer norms after a residual fused into SkipLayerNormalization,
# or left as a residual Sum and LayerNormalization.
SKIP_LAYER_NORM, LAYER_NORM = "skip_layer_norm", "layer_norm"


@dataclass
class OptimizeConfig(StepConfig):
    name: ClassVar[str] = "optimize"
    stage: ClassVar[str] = "onnx"
    model_type: str = "bert"    # which of onnxruntime's fusion sets (encoders like BERT and MiniLM: bert)
    num_heads: int = 0          # 0: found from the graph
    hidden_size: int = 0        # the width of Q (heads x head size); 0: found from the graph
    # The fused graph is kept only where its outputs match the input graph's: max abs diff <= atol,
    # or max abs diff relative to the largest output <= rtol. Fused float kernels land about 1e-7
    # from the input graph (BERT, relative); a wrong head count on a trained model, 1e-3 and more.
    atol: float = 1e-4
    rtol: float = 1e-4

    def check(self) -> None:
        require(self.model_type in MODEL_TYPES, "optimize.model_type", self.model_type,
                " or ".join(repr(t) for t in MODEL_TYPES))
        require(self.num_heads >= 0, "optimize.num_heads", self.num_heads, "0 (found from the graph) or more")
        require(self.hidden_size >= 0, "optimize.hidden_size", self.hidden_size, "0 (found from the graph) or more")
        require(self.atol >= 0, "optimize.atol", self.atol, "0 or more")
        require(self.rtol >= 0, "optimize.rtol", self.rtol, "0 or more")


@register_step(OptimizeConfig)
def optimize(model, config: OptimizeConfig, ctx):
    from edgeslim.compress.quantize import timing_sample

    heads, hidden, found_by = _heads(model, config)
    forms = fused_forms(model, config.model_type, heads, hidden, explicit=found_by != "config")
    counts = forms[SKIP_LAYER_NORM][1]
    record = {"model_type": config.model_type, "num_heads": heads, "hidden_size": hidden, "heads_from": found_by,
              "fused": counts}
    if "Softmax" in _op_types(model) and not counts.get("Attention") and not counts.get("MultiHeadAttention"):
        record["note"] = ("no attention fused: onnxruntime's fusions did not recognise this graph's attention "
                          "(a Hugging Face model exported with attn_implementation='eager' has the pattern they read)")
    why, chosen = _choice(model, forms, config, record, ctx, timing_sample(ctx))
    record.update(kept=why is None, **({"why": why} if why else {}))
    ctx.record(graph_optimization=record)
    fused_text = ", ".join(f"{count} {op}" for op, count in record["fused"].items()) or "nothing"
    log(f"{ctx.candidate}: graph optimization ({config.model_type}, {heads or '?'} heads): fused {fused_text}; "
        + ("kept" if why is None else f"not kept: {why}"))
    return model if why else forms[chosen][0]


def fused_forms(model, model_type: str, heads: int, hidden: int, explicit: bool) -> dict:
    """{form: (fused model, fused op counts)}: onnxruntime's fusions, and where they fused a
    SkipLayerNormalization, the same with each residual Add + LayerNormalization left apart (see residual_sums)."""
    forms = {SKIP_LAYER_NORM: fuse(model, model_type, heads, hidden, explicit)}
    if forms[SKIP_LAYER_NORM][1].get("SkipLayerNormalization"):
        apart, counts = fuse(model, model_type, heads, hidden, explicit, skip_layer_norm=False)
        residual_sums(apart)
        forms[LAYER_NORM] = (apart, counts)
    return forms


def _choice(model, forms: dict, config: OptimizeConfig, record: dict, ctx, sample: dict) -> tuple[str | None, str]:
    """(why no fused form is kept or None, the form kept): every form must give the input graph's outputs;
    the fastest on the target is kept, where it is no slower than the input graph."""
    from edgeslim.compress.int8_forms import SLOWER

    if not forms[SKIP_LAYER_NORM][1]:
        return f"onnxruntime's '{config.model_type}' fusions found nothing to fuse in this graph", SKIP_LAYER_NORM
    batches = _batches(ctx)
    outputs = {form: agreement(model, fused, batches, ctx.input_names) for form, (fused, _) in forms.items()}
    record["outputs"] = outputs[SKIP_LAYER_NORM]
    if not _agrees(record["outputs"], config):
        return (f"the fused graph's outputs differ from the input graph's (max abs diff "
                f"{record['outputs']['max_abs_diff']:.3g}, min cosine {record['outputs']['min_cosine']:.6f}): "
                f"num_heads {record['num_heads']} and hidden_size {record['hidden_size']} do not fit this model; "
                "give them as the step's options"), SKIP_LAYER_NORM
    forms = {form: value for form, value in forms.items() if _agrees(outputs[form], config)}
    if ctx.measure is None:
        return (f"not measurable on {ctx.target.get('name')} from this host, and the fused graph is kept only "
                "where it is measured no slower"), SKIP_LAYER_NORM
    timed_as, quantized = _as_later_steps_run(model, ctx)
    record["timed_as"] = timed_as
    timing = ctx.measure({"parent": quantized(model), **{form: quantized(fused) for form, (fused, _) in forms.items()}},
                         sample)
    sums = Counter(node.op_type for node in model.graph.node)["Sum"]
    record["forms"] = {form: {"fused": counts, "p50_ms": timing["p50_ms"][form], "x_parent": timing["x_parent"][form],
                              "residual_sums": Counter(node.op_type for node in fused.graph.node)["Sum"] - sums}
                       for form, (fused, counts) in forms.items()}
    chosen = min(record["forms"], key=lambda form: record["forms"][form]["x_parent"])
    record.update(form=chosen, fused=forms[chosen][1], p50_ms=timing["p50_ms"][chosen],
                  parent_p50_ms=timing["p50_ms"]["parent"], x_parent=timing["x_parent"][chosen],
                  measured_on=timing.get("where"))
    if record["x_parent"] > SLOWER:
        return (f"the fused graph runs {record['x_parent']:.2f}x the input graph's time on {ctx.target.get('name')} "
                f"(both timed as {timed_as})"), chosen
    return None, chosen


def _as_later_steps_run(model, ctx) -> tuple[str, object]:
    """(words, a function giving a graph as it will run): dynamic INT8 where a later step quantizes the matmuls
    that way (the dynamic step, or int8 whose forms include dynamic: the form it keeps for transformer matmuls
    on CPUs), else the float graph itself.

    Measured 2026-11-24 on all-MiniLM-L6-v2 pruned by 0.3: the fused float graph ran 1.08x the unfused one,
    but as dynamic INT8 the fused one (QAttention) ran 0.94x the unfused one (2.55x against 2.38x fp32's
    speed): judged in float, the step refused the faster bundle."""
    from edgeslim.compress import apply_step
    from edgeslim.compress.int8_forms import build_form, forms_for, int8_settings, resolved

    for step in ctx.after:
        if step.name == "dynamic":
            return "dynamic INT8, as the dynamic step after this one quantizes it", \
                lambda graph, step=step: apply_step(graph, step, ctx)
        if step.name == "int8" and "dynamic" in forms_for(step.backend, model):
            config = resolved(step, int8_settings(ctx.target, step.overflow_fix))
            return "dynamic INT8, one of the forms the int8 step after this one builds", \
                lambda graph, config=config: build_form("dynamic", graph, [], config, ctx)
    return "float", lambda graph: graph


def _heads(model, config: OptimizeConfig) -> tuple[int, int, str]:
    """(num_heads, hidden_size, where they came from): the config's, else the graph's, else onnxruntime's own."""
    if config.num_heads and config.hidden_size:
        return config.num_heads, config.hidden_size, "config"
    heads, hidden = attention_dims(model)
    if heads:
        return config.num_heads or heads, config.hidden_size or hidden, "graph"
    return config.num_heads, config.hidden_size, "onnxruntime"


def fuse(model, model_type: str, num_heads: int, hidden_size: int, explicit: bool = True,
         skip_layer_norm: bool = True) -> tuple:
    """(the fused model, {fused op: how many more than before}) from onnxruntime's optimizer, run on files in a
    temporary folder: given a ModelProto it would move the caller's weights to external data."""
    import tempfile
    from pathlib import Path

    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    from edgeslim.compress.int8_forms import _working_in, quiet_logging

    with tempfile.TemporaryDirectory() as tmp, _working_in(Path(tmp)), quiet_logging():
        source = Path(tmp) / "in.onnx"
        # Each attention's own head count written into the graph, unless the caller gave the counts to use.
        onnx.save(with_explicit_head_counts(model) if explicit else model, source)
        options = FusionOptions(model_type)
        # Fused into EmbedLayerNormalization, the word embedding table (47 of all-MiniLM-L6-v2's 90 MB) is
        # an input no quantizer reads; left as a Gather, dynamic INT8 stores it in 8 bits.
        options.enable_embed_layer_norm = False
        options.enable_skip_layer_norm = options.enable_bias_skip_layer_norm = skip_layer_norm
        optimizer = optimize_model(str(source), model_type=model_type, num_heads=num_heads, hidden_size=hidden_size,
                                   optimization_options=options)
        # Its statistics count ops in the result, LayerNormalization the exporter wrote included: count the new ones.
        before = Counter(node.op_type for node in model.graph.node)
        counts = {op: count - before[op] for op, count in optimizer.get_fused_operator_statistics().items()
                  if count > before[op]}
        return with_types_from(optimizer.model, model), counts


def residual_sums(model) -> int:
    """Write each Add of two computed tensors that feeds a LayerNormalization alone as Sum (the same sum);
    returns how many.

    onnxruntime fuses Add + LayerNormalization into SkipLayerNormalization when it loads a graph, with no
    option in the graph to stop it; its CPU float kernel ran 67 us a layer against 16 us for
    LayerNormalization and 5 us for the Add (all-MiniLM-L6-v2 pruned by 0.3, dynamic INT8, 64 tokens,
    onnxruntime 1.32, 2 cores): 17 % of the whole model's time. It matches Add only."""
    graph = model.graph
    producers = {name: node for node in graph.node for name in node.output}
    consumers = Counter(name for node in graph.node for name in node.input)
    constants = {t.name for t in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}
    outputs = {value.name for value in graph.output}
    rewritten = 0
    for node in graph.node:
        add = producers.get(node.input[0]) if node.op_type == "LayerNormalization" else None
        if (add is not None and add.op_type == "Add" and consumers[add.output[0]] == 1
                and add.output[0] not in outputs and not constants & set(add.input)):
            add.op_type = "Sum"
            rewritten += 1
    return rewritten


def with_types_from(fused, source):
    """`fused` with a type and shape for each tensor that ONNX shape inference cannot type, taken from the
    same-named tensor of `source`.

    ONNX shape inference knows no com.microsoft op, so it types neither the outputs of the fused ops
    (SkipLayerNormalization, BiasGelu, Attention) nor anything after them. NNCF builds its graph from
    those types and leaves out every edge it cannot type: the MatMul after a SkipLayerNormalization
    then has no input, and its SmoothQuant fails ("Node /mlp/mlp.0/MatMul does not contain input edge
    connected to 0 port ID"). A fused op writes the tensor of the subgraph it replaces, under that name."""
    from onnx.shape_inference import infer_shapes

    typed = {value.name for value in _typed_values(infer_shapes(fused))} | {t.name for t in fused.graph.initializer}
    known = {value.name: value for value in _typed_values(infer_shapes(source))}
    fused.graph.value_info.extend(known[name] for name in _node_outputs(fused) - typed if name in known)
    return fused


def _typed_values(model) -> list:
    graph = model.graph
    return [value for value in [*graph.value_info, *graph.input, *graph.output] if value.type.HasField("tensor_type")]


def _node_outputs(model) -> set[str]:
    return {name for node in model.graph.node for name in node.output if name}


def with_explicit_head_counts(model):
    """A copy of `model` whose head-splitting Reshapes say their head count instead of -1.

    Hugging Face splits Q, K and V with view(batch, sequence, -1, head_size); onnxruntime reads each
    attention's head count from that shape and, finding -1, falls back to one count for the whole model.
    Writing each layer's own count (its projection's width over the head size) lets every attention
    fuse with its own, which a pruned model needs: global pruning leaves each layer a different number.
    Each rewritten Reshape gets a shape of its own, so a shape shared by several is never changed under them."""
    import copy

    model = copy.deepcopy(model)
    graph = model.graph
    constants = _constants(graph)
    producers = {output: node for node in graph.node for output in node.output}
    rewritten = []
    for index, node in enumerate(graph.node):
        width = _projection_width(node.input[0], constants, producers) if node.op_type == "Reshape" else None
        shape_node = _explicit_shape(node, index, width, constants, producers, graph) if width else None
        rewritten += [shape_node] if shape_node is not None else []
        rewritten.append(node)
    del graph.node[:]
    graph.node.extend(rewritten)
    return model


def _explicit_shape(reshape, index: int, width: int, constants: dict, producers: dict, graph):
    """Point `reshape` at a target shape with its head count written out; returns a new Concat to insert
    before it where the shape was a Concat of pieces, None where the shape was a constant (or left alone)."""
    from onnx import helper, numpy_helper

    name = reshape.input[1]
    tail = _shape_tail(name, constants, producers)
    if tail is None or tail[0] != -1 or tail[1] <= 0 or width % tail[1]:
        return None
    heads = width // tail[1]
    label = f"{reshape.name or 'reshape'}_{index}_heads"
    if name in constants:
        shape = np.asarray(constants[name], dtype=np.int64).copy()
        shape.reshape(-1)[2] = heads
        graph.initializer.append(numpy_helper.from_array(shape, label))
        reshape.input[1] = label
        return None
    concat = producers[name]
    piece = np.asarray(constants[concat.input[2]], dtype=np.int64).copy()
    piece.reshape(-1)[0] = heads
    graph.initializer.append(numpy_helper.from_array(piece, f"{label}_count"))
    inputs = list(concat.input)
    inputs[2] = f"{label}_count"
    reshape.input[1] = f"{label}_shape"
    return helper.make_node("Concat", inputs, [f"{label}_shape"], name=f"{label}_concat",
                            axis=next(a.i for a in concat.attribute if a.name == "axis"))


def attention_dims(model) -> tuple[int, int]:
    """(num_heads, heads x head_size) read from the Reshapes that split a projection into heads, the most
    common pair among them; (0, 0) where the graph has none."""
    graph = model.graph
    constants = _constants(graph)
    producers = {output: node for node in graph.node for output in node.output}
    found = Counter()
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        shape = _shape_tail(node.input[1], constants, producers)
        width = _projection_width(node.input[0], constants, producers)
        if shape is None or width is None:
            continue
        heads, head_size = shape
        if head_size <= 0 or width % head_size:
            continue
        heads = heads if heads > 0 else width // head_size
        if heads * head_size == width:
            found[(heads, width)] += 1
    return found.most_common(1)[0][0] if found else (0, 0)


def _constants(graph) -> dict:
    from onnx import numpy_helper

    values = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attribute.t)
    return values


def _shape_tail(name: str, constants: dict, producers: dict) -> tuple[int, int] | None:
    """The last two entries (heads, head size) of a 4-D target shape: a constant, or a Concat of pieces."""
    if name in constants:
        shape = np.asarray(constants[name]).reshape(-1)
        return (int(shape[2]), int(shape[3])) if shape.size == 4 else None
    concat = producers.get(name)
    if concat is None or concat.op_type != "Concat" or len(concat.input) != 4:
        return None
    tail = [constants.get(piece) for piece in concat.input[2:]]
    if any(value is None or np.asarray(value).size != 1 for value in tail):
        return None
    return int(np.asarray(tail[0]).reshape(-1)[0]), int(np.asarray(tail[1]).reshape(-1)[0])


def _projection_width(name: str, constants: dict, producers: dict) -> int | None:
    """The output width of the MatMul (with or without a bias Add) that computes `name`, from its constant weight."""
    node = producers.get(name)
    if node is not None and node.op_type == "Add":
        node = next((producers.get(i) for i in node.input if getattr(producers.get(i), "op_type", "") == "MatMul"),
                    None)
    if node is None or node.op_type != "MatMul":
        return None
    weight = constants.get(node.input[1])
    return int(weight.shape[-1]) if weight is not None and weight.ndim == 2 else None


def _op_types(model) -> set:
    return {node.op_type for node in model.graph.node}


def _batches(ctx) -> list:
    batches = [inputs for inputs, _ in ctx.data.val] or ctx.data.calibration_inputs()
    return batches[:CHECK_BATCHES]


def agreement(reference, candidate, batches: list, input_names: list[str]) -> dict:
    """How far `candidate`'s outputs are from `reference`'s on real batches: max abs diff, that relative
    to the largest reference output, and the lowest cosine similarity of one sample's outputs."""
    import onnxruntime as ort

    from edgeslim.core.data import feed_for

    sessions = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
                for m in (reference, candidate)]
    max_abs, max_ref, min_cosine = 0.0, 0.0, 1.0
    for inputs in batches:
        feed = feed_for(inputs, input_names)
        for want, got in zip(*(session.run(None, feed) for session in sessions)):
            want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
            max_abs = max(max_abs, float(np.max(np.abs(want - got))))
            max_ref = max(max_ref, float(np.max(np.abs(want))))
            min_cosine = min(min_cosine, _min_cosine(want, got))
    return {"max_abs_diff": max_abs, "max_rel_diff": max_abs / max(max_ref, 1e-12), "min_cosine": min_cosine,
            "batches": len(batches)}


def _min_cosine(want: np.ndarray, got: np.ndarray) -> float:
    """The lowest cosine similarity between the rows (samples) of two outputs; 1 where both rows are equal."""
    rows = want.shape[0] if want.ndim else 1
    rows_want, rows_got = want.reshape(rows, -1), got.reshape(rows, -1)
    norms = np.linalg.norm(rows_want, axis=1) * np.linalg.norm(rows_got, axis=1)
    same = np.all(rows_want == rows_got, axis=1)
    cosine = np.where(norms > 0, (rows_want * rows_got).sum(1) / np.maximum(norms, 1e-300), 1.0)
    return float(np.min(np.where(same, 1.0, cosine)))


def _agrees(outputs: dict, config: OptimizeConfig) -> bool:
    return outputs["max_abs_diff"] <= config.atol or outputs["max_rel_diff"] <= config.rtol
