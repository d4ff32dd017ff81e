"""The optimize step: onnxruntime's transformer fusions on a real (tiny) BertModel, kept only where the
fused graph gives the same outputs and is no slower; the quantization steps after it."""
import json
from pathlib import Path

import onnx
import pytest

from edgeslim.build import StepContext, build_target
from edgeslim.compress import apply_step, check_order, make_step
from edgeslim.compress.graph_optimize import MODEL_TYPES, agreement, attention_dims, fuse
from edgeslim.core.errors import ConfigError
from edgeslim.core.model_io import load_model
from edgeslim.core.specs import load_data, load_metric
from edgeslim.export.onnx_export import ExportConfig, export_onnx
from edgeslim.plan import GRAPH_MODEL_TYPES, PlanOptions, plan_steps
from edgeslim.views import _graph_lines

pytest.importorskip("transformers")

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real_arch.py"
LAYERS, HEADS, WIDTH = 2, 4, 32  # tests/fixtures/real_arch.py's BertConfig
SHARPEN = 10.0


def _context(data, names) -> StepContext:
    target, measure = build_target("cpu")
    return StepContext(data=data, teacher=None, metric=load_metric(f"{REAL}:output_scale"),
                       example_inputs=data.sample_inputs(), candidate="t", input_names=names, target=target,
                       measure=measure)


def _sharpened(model):
    """Query and key weights scaled up, so that attention peaks on a few tokens as a trained model's does
    (initialised, it is nearly uniform, and the head split hardly changes the outputs)."""
    import torch

    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            layer.attention.self.query.weight.mul_(SHARPEN)
            layer.attention.self.key.weight.mul_(SHARPEN)
    return model


def _exported(factory: str, prune: float = 0.0):
    """(ONNX model, step context) of a real_arch factory with sharpened attention, pruned first where asked."""
    model, data = _sharpened(load_model(f"{REAL}:{factory}")), load_data(f"{REAL}:tokens")
    if prune:
        model = apply_step(model, make_step("prune", {"ratio": prune, "round_to": 4}), _context(data, []))
    proto, names, _ = export_onnx(model, data.sample_inputs(), ExportConfig())
    return proto, _context(data, names)


def _optimized(factory: str, prune: float = 0.0, **options):
    proto, ctx = _exported(factory, prune)
    result = apply_step(proto, make_step("optimize", options), ctx)
    return proto, result, ctx.records["graph_optimization"]


def _ops(model) -> dict:
    counts = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def test_eager_bert_fuses_one_attention_per_layer_with_the_same_outputs():
    source, fused, record = _optimized("eager_sentence_encoder")
    # onnxruntime cannot read the head count from Hugging Face's (batch, sequence, -1, head_size) reshape;
    # edgeslim finds it from that reshape and the Q projection's width.
    assert (record["num_heads"], record["hidden_size"], record["heads_from"]) == (HEADS, WIDTH, "graph")
    assert record["fused"]["Attention"] == LAYERS == _ops(fused)["Attention"]
    # Two forms timed against each other: layer norms fused into SkipLayerNormalization, or left apart after
    # a residual Sum (the embeddings' sum too); the faster is kept, and the manifest says which.
    forms = record["forms"]
    assert forms["skip_layer_norm"]["fused"]["SkipLayerNormalization"] == 2 * LAYERS
    assert forms["skip_layer_norm"]["residual_sums"] == 0
    assert forms["layer_norm"]["residual_sums"] == 2 * LAYERS + 1
    assert "SkipLayerNormalization" not in forms["layer_norm"]["fused"]
    assert record["form"] == min(forms, key=lambda form: forms[form]["x_parent"])
    assert record["fused"] == forms[record["form"]]["fused"] and record["x_parent"] == forms[record["form"]]["x_parent"]
    said = _graph_lines(record)[1]  # what `edgeslim inspect` prints
    assert said.startswith("  graph   layer norms fused into SkipLayerNormalization") and said.endswith(
        "apart kept" if record["form"] == "layer_norm" else "fused kept")
    assert record["outputs"]["max_abs_diff"] < 1e-5 and record["outputs"]["min_cosine"] > 0.99999
    assert record["kept"] is True and "why" not in record, record
    assert record["x_parent"] <= 1.05  # measured on this host against the exported graph
    assert "Attention" not in _ops(source)  # the step's input is left as it was


def test_a_pruned_bert_fuses_with_its_remaining_heads():
    _, fused, record = _optimized("eager_sentence_encoder", prune=0.5)
    assert attention_dims(fused) == (0, 0)  # nothing left to split into heads: all fused
    assert (record["num_heads"], record["hidden_size"]) == (HEADS // 2, WIDTH // 2)
    assert record["fused"]["Attention"] == LAYERS and record["kept"] is True, record


def _keep_heads(model, kept_per_layer: list[int]):
    """Layer i keeps its first kept_per_layer[i] heads, as a globally ranked pruning leaves a model."""
    import torch

    size = WIDTH // HEADS
    for layer, kept in zip(model.bert.encoder.layer, kept_per_layer):
        attention, width = layer.attention.self, kept * size
        with torch.no_grad():
            for name in ("query", "key", "value"):
                old = getattr(attention, name)
                new = torch.nn.Linear(old.in_features, width)
                new.weight.copy_(old.weight[:width]), new.bias.copy_(old.bias[:width])
                setattr(attention, name, new)
            dense = layer.attention.output.dense
            narrowed = torch.nn.Linear(width, dense.out_features)
            narrowed.weight.copy_(dense.weight[:, :width]), narrowed.bias.copy_(dense.bias)
            layer.attention.output.dense = narrowed
        attention.num_attention_heads, attention.all_head_size = kept, width
    return model


def test_layers_with_different_head_counts_each_fuse_with_their_own():
    """onnxruntime takes one head count for the model unless the graph states each layer's: the step writes
    them in, so 3 heads in one layer and 1 in the other fuse, with the same outputs."""
    model, data = _keep_heads(_sharpened(load_model(f"{REAL}:eager_sentence_encoder")), [3, 1]), \
        load_data(f"{REAL}:tokens")
    proto, names, _ = export_onnx(model, data.sample_inputs(), ExportConfig())
    ctx = _context(data, names)
    result = apply_step(proto, make_step("optimize"), ctx)
    record = ctx.records["graph_optimization"]
    assert record["fused"]["Attention"] == LAYERS and record["kept"] is True, record
    heads = sorted(next(a.i for a in node.attribute if a.name == "num_heads")
                   for node in result.graph.node if node.op_type == "Attention")
    assert heads == [1, 3]
    assert record["outputs"]["max_rel_diff"] < 1e-4


def test_a_wrong_head_count_gives_other_outputs_and_the_input_back():
    """The unpruned model's head count on the pruned graph: onnxruntime fuses, and the numbers change."""
    source, result, record = _optimized("eager_sentence_encoder", prune=0.5, num_heads=HEADS, hidden_size=WIDTH)
    assert record["heads_from"] == "config" and record["fused"].get("Attention") == LAYERS
    assert record["kept"] is False and result is source
    assert record["why"].startswith("the fused graph's outputs differ from the input graph's")
    assert record["outputs"]["max_abs_diff"] > 1e-3


def test_sdpa_attention_is_not_fused_and_the_manifest_says_why():
    """transformers' default attention exports as torch's scaled-dot-product decomposition, a pattern
    onnxruntime's bert fusions do not read; the layer norms and GELUs still fuse."""
    _, fused, record = _optimized("sentence_encoder")
    assert "Attention" not in record["fused"]
    assert record["forms"]["skip_layer_norm"]["fused"]["SkipLayerNormalization"] == 2 * LAYERS
    assert "attn_implementation='eager'" in record["note"]
    assert record["outputs"]["max_abs_diff"] < 1e-5


def test_a_residual_sum_keeps_onnxruntime_from_fusing_its_layer_norm_when_it_loads_the_graph():
    """onnxruntime fuses Add + LayerNormalization into SkipLayerNormalization as it loads a graph whose shapes
    it knows (its CPU float kernel measured 4x LayerNormalization's time on MiniLM); the same sum as Sum, it
    leaves the two apart, with the same outputs. A bias Add (one constant input) is left as it is."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgeslim.compress.graph_optimize import residual_sums

    rng = np.random.default_rng(0)
    width = 16
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("bias", [width]), ("gamma", [width]), ("beta", [width]))]
    nodes = [helper.make_node("Add", ["x", "bias"], ["biased"]),
             helper.make_node("Add", ["biased", "residual"], ["sum"]),
             helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-5)]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 8, width]) for name in ("x", "residual")]
    graph = helper.make_graph(nodes, "residual", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, width])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feed = {name: rng.standard_normal((1, 8, width)).astype(np.float32) for name in ("x", "residual")}

    def loaded(proto):
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            options = ort.SessionOptions()
            options.optimized_model_filepath = f"{folder}/loaded.onnx"
            session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
            return session.run(None, feed)[0], _ops(onnx.load(options.optimized_model_filepath))

    before, fused_on_load = loaded(model)
    assert fused_on_load.get("SkipLayerNormalization") == 1
    assert residual_sums(model) == 1 and _ops(model) == {"Add": 1, "Sum": 1, "LayerNormalization": 1}
    after, loaded_ops = loaded(model)
    assert "SkipLayerNormalization" not in loaded_ops and loaded_ops["LayerNormalization"] == 1
    assert np.allclose(before, after, atol=1e-5)


def _fused_zoo_transformer():
    """(fused ONNX model, step context) of tests/fixtures/zoo.py's transformer: a SkipLayerNormalization and a
    BiasGelu fuse (nn.MultiheadAttention's attention does not)."""
    from helpers import spec

    data = load_data(spec("digits"))
    proto, names, _ = export_onnx(load_model(spec("transformer")), data.sample_inputs(), ExportConfig())
    return fuse(proto, "bert", 0, 0)[0], _context(data, names)


def _fused_bert():
    proto, ctx = _exported("eager_sentence_encoder")
    return fuse(proto, "bert", HEADS, WIDTH)[0], ctx


@pytest.mark.parametrize("fused_model", [_fused_zoo_transformer, _fused_bert])
def test_nncf_int8_quantizes_the_matmuls_after_fused_ops(fused_model):
    """ONNX shape inference types nothing after a com.microsoft op, and NNCF leaves out of its graph every edge
    it cannot type. Without the types the fusion step writes in, SmoothQuant failed on the zoo transformer's
    MatMul after SkipLayerNormalization ("Node /mlp/mlp.0/MatMul does not contain input edge connected to 0
    port ID"), and BERT's six MatMuls after Attention, SkipLayerNormalization and BiasGelu stayed float."""
    from edgeslim.compress.quantize import Int8Config, calibration_samples, nncf_ptq

    fused, ctx = fused_model()
    assert _untyped(fused) == set()
    weights = {t.name for t in fused.graph.initializer}
    weighted = {n.name for n in fused.graph.node if n.op_type == "MatMul" and n.input[1] in weights}
    quantized = nncf_ptq(fused, calibration_samples(ctx, 32), Int8Config(overflow_fix="disable"))
    producers = {output: node.op_type for node in quantized.graph.node for output in node.output}
    fed = {n.name: [producers.get(i) for i in n.input] for n in quantized.graph.node if n.name in weighted}
    assert fed == {name: ["DequantizeLinear", "DequantizeLinear"] for name in weighted}
    outputs = agreement(fused, quantized, [inputs for inputs, _ in ctx.data.val], ctx.input_names)
    assert outputs["min_cosine"] > 0.99, outputs


def _untyped(model) -> set[str]:
    """The tensors that nodes write and ONNX shape inference gives no type."""
    inferred = onnx.shape_inference.infer_shapes(model).graph
    typed = {value.name for value in [*inferred.value_info, *inferred.output]}
    return {name for node in inferred.node for name in node.output if name and name not in typed}


def test_a_cnn_has_nothing_to_fuse_and_is_handed_back():
    from helpers import spec

    data = load_data(spec("digits"))
    proto, names, _ = export_onnx(load_model(spec("small_cnn")), data.sample_inputs(), ExportConfig())
    ctx = _context(data, names)
    assert apply_step(proto, make_step("optimize"), ctx) is proto
    record = ctx.records["graph_optimization"]
    assert record["fused"] == {} and record["kept"] is False
    assert record["why"] == "onnxruntime's 'bert' fusions found nothing to fuse in this graph"


def test_optimize_comes_before_one_quantization():
    check_order([make_step("optimize"), make_step("int8")])
    check_order([make_step("prune"), make_step("optimize"), make_step("int4")])
    with pytest.raises(ConfigError, match="step 'optimize' rewrites the float graph and cannot follow 'dynamic'"):
        check_order([make_step("dynamic"), make_step("optimize")])
    with pytest.raises(ConfigError, match="step 'optimize' is listed twice"):
        check_order([make_step("optimize"), make_step("optimize")])
    with pytest.raises(ConfigError, match="at most one quantization step, got \\['int4', 'int8'\\]"):
        check_order([make_step("optimize"), make_step("int4"), make_step("int8")])
    steps = plan_steps(PlanOptions(prune=0.5, optimize_graph="bert", quantize="dynamic"))
    assert [s.name for s in steps] == ["prune", "distill", "optimize", "dynamic"]
    assert set(GRAPH_MODEL_TYPES) == set(MODEL_TYPES)


def test_bad_options_are_one_sentence(cli, tmp_path):
    from helpers import assert_one_sentence

    with pytest.raises(ConfigError, match="optimize.model_type='llama' is not allowed: it must be 'bert' or"):
        make_step("optimize", {"model_type": "llama"})
    result = cli("compress", "--model", f"{REAL}:sentence_encoder", "--data", f"{REAL}:tokens",
                 "--optimize-graph", "llama", "--out", tmp_path / "b")
    assert_one_sentence(result, "invalid value for --optimize-graph of `edgeslim compress`: 'llama' is not one of "
                                "'bert', 'bart'")
    assert not (tmp_path / "b").exists()


def _compress(cli, out: Path, *flags) -> dict:
    result = cli("compress", "--model", f"{REAL}:eager_sentence_encoder", "--data", f"{REAL}:tokens",
                 "--metric", f"{REAL}:output_scale", "--optimize-graph", *flags, "--out", out)
    assert result.exit_code == 0, result.stderr
    return json.loads((out / "manifest.json").read_text())


@pytest.mark.slow  # two bundles
def test_dynamic_int8_and_int4_after_optimize(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # onnxruntime's tools write temporary files: none may land here
    dynamic = _compress(cli, tmp_path / "dynamic", "--quantize", "dynamic")
    assert [s["step"] for s in dynamic["compression"]] == ["optimize", "dynamic"]
    assert dynamic["metrics"]["graph_optimization"]["kept"] is True
    # judged as the dynamic step will run it, not as the float graph
    assert dynamic["metrics"]["graph_optimization"]["timed_as"].startswith("dynamic INT8")
    families = dynamic["metrics"]["int8_coverage"]["families"]
    assert families["attention"] == {"int8": LAYERS, "float": 0, "float_nodes": []}  # QAttention
    assert dynamic["ops"].get("QAttention") == LAYERS
    # the word embeddings stay a Gather that dynamic INT8 stores in 8 bits, not an EmbedLayerNormalization input
    assert "EmbedLayerNormalization" not in dynamic["ops"]
    # (edgeslim.compress.tables: with a scale per block of each row)
    embeddings = [t for t in onnx.load(tmp_path / "dynamic" / "model.onnx").graph.initializer
                  if t.name.endswith("word_embeddings.weight_blocks_uint8")]
    assert len(embeddings) == 1 and embeddings[0].data_type == onnx.TensorProto.UINT8
    assert dynamic["ops"].get("GatherBlockQuantized") == 3  # word, position and token-type tables

    int4 = _compress(cli, tmp_path / "int4", "--quantize", "int4")
    record, coverage = int4["metrics"]["int4"], int4["metrics"]["int8_coverage"]
    assert int4["metrics"]["graph_optimization"]["timed_as"] == "float"  # MatMulNBits: no dynamic INT8 after it
    # Q, K and V went into Attention's packed weight (float): each layer's attention output and FFN's two are left.
    assert record["matmul_nbits"] == record["matmuls"] == 3 * LAYERS == coverage["families"]["matmul"]["int4"]
    assert coverage["families"]["attention"]["float"] == LAYERS
    onnx.checker.check_model(onnx.load(tmp_path / "int4" / "model.onnx"))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["dynamic", "int4"]


def test_the_fused_graph_is_timed_as_the_int8_step_after_it_will_run_it():
    from edgeslim.compress.graph_optimize import _as_later_steps_run

    proto, ctx = _exported("eager_sentence_encoder")
    ctx.after = [make_step("int8")]  # auto: its forms include dynamic INT8 for a graph with MatMuls
    words, quantized = _as_later_steps_run(proto, ctx)
    assert words.startswith("dynamic INT8") and _ops(quantized(proto)).get("MatMulInteger", 0) > 0
    ctx.after = [make_step("int8", {"backend": "nncf"})]  # static QDQ: fused ops stay float, so judge in float
    words, quantized = _as_later_steps_run(proto, ctx)
    assert words == "float" and quantized(proto) is proto


def test_steps_time_at_the_export_examples_shape_not_a_short_train_batch():
    """Train batches grouped by length can be far shorter than what the bundle is benchmarked at: the optimize
    step, the int8 form choice and INT4 all time on the first row of the export example."""
    import numpy as np

    from edgeslim.compress.quantize import calibration_samples, timing_sample

    proto, ctx = _exported("eager_sentence_encoder")
    short = [({name: value[:, :5] for name, value in inputs.items()}, labels) for inputs, labels in ctx.data.train]
    ctx.data.train = short
    sample = timing_sample(ctx)
    example = ctx.example_inputs
    assert {name: value.shape for name, value in sample.items()} == {name: (1, example[name].shape[1])
                                                                     for name in ctx.input_names}
    assert np.array_equal(sample["input_ids"][0], example["input_ids"][0])
    assert calibration_samples(ctx, 1)[0]["input_ids"].shape[1] == 5  # what the steps timed on before
    result = apply_step(proto, make_step("optimize"), ctx)
    assert ctx.records["graph_optimization"]["kept"] == (result is not proto)
