"""Pruning the architectures users bring: Hugging Face attention, nn.MultiheadAttention, recurrent layers.

The models are in tests/fixtures/real_arch.py, written as users write them; edgeslim has no code for any.
"""
import json
from pathlib import Path

import pytest
import torch

from edgeslim.build import StepContext
from edgeslim.compress import apply_step, make_step
from edgeslim.core.model_io import count_params, load_model, run_model
from edgeslim.core.specs import load_data

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real_arch.py"


def _prune(factory: str, data_factory: str, ratio=0.5):
    """(pruned model, parameters before, the step's records, the data) through the prune step."""
    model, data = load_model(f"{REAL}:{factory}"), load_data(f"{REAL}:{data_factory}")
    ctx = StepContext(data=data, teacher=None, metric=None, example_inputs=data.sample_inputs(), candidate="t")
    before = count_params(model)
    pruned = apply_step(model, make_step("prune", {"ratio": ratio, "round_to": 4}), ctx)
    return pruned, before, ctx.records, data


def _outputs(model, inputs):
    with torch.no_grad():
        return run_model(model, inputs)


def test_bert_heads_and_ffn_prune_with_the_head_fields_following():
    pytest.importorskip("transformers")
    model, before, records, data = _prune("sentence_encoder", "tokens")
    assert records["params_after"] == count_params(model) < 0.7 * before
    assert "kept_whole" not in records
    for layer in model.bert.encoder.layer:
        attention = layer.attention.self
        assert attention.num_attention_heads == 2  # 4 heads, half removed, each keeps its 8 dims
        assert attention.attention_head_size == 8
        width = attention.num_attention_heads * attention.attention_head_size
        assert width == attention.all_head_size == attention.query.out_features == attention.value.out_features
        assert layer.attention.output.dense.in_features == width
        assert layer.intermediate.dense.out_features == 32  # the FFN, 64 wide, halved
    inputs = data.val[0][0]
    assert _outputs(model, inputs).shape == (8, 32)  # the embedding keeps its width


def test_bert_heads_that_carry_nothing_go_and_the_output_stays():
    """Heads 1 and 3 and half the FFN zeroed: pruning must remove exactly them, so nothing changes."""
    pytest.importorskip("transformers")
    model, data = load_model(f"{REAL}:sentence_encoder"), load_data(f"{REAL}:tokens")
    dead_heads = torch.cat([torch.arange(8, 16), torch.arange(24, 32)])
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            attention = layer.attention.self
            for projection in (attention.query, attention.key, attention.value):
                projection.weight[dead_heads] = 0
                projection.bias[dead_heads] = 0
            layer.attention.output.dense.weight[:, dead_heads] = 0
            layer.intermediate.dense.weight[32:] = 0
            layer.intermediate.dense.bias[32:] = 0
            layer.output.dense.weight[:, 32:] = 0
    inputs = data.val[0][0]
    expected = _outputs(model, inputs)
    ctx = StepContext(data=data, teacher=None, metric=None, example_inputs=data.sample_inputs(), candidate="t")
    pruned = apply_step(model, make_step("prune", {"ratio": 0.5, "round_to": 4}), ctx)
    assert pruned.bert.encoder.layer[0].attention.self.num_attention_heads == 2
    assert torch.allclose(_outputs(pruned, inputs), expected, atol=1e-5)


def test_pruned_bert_exports_and_passes_parity():
    pytest.importorskip("transformers")
    from edgeslim.export.onnx_export import ExportConfig, check_parity, export_onnx

    model, _, _, data = _prune("sentence_encoder", "tokens")
    config = ExportConfig()
    proto, names, _ = export_onnx(model, data.sample_inputs(), config)
    parity = check_parity(model, proto, [inputs for inputs, _ in data.val + data.train], names, config)
    assert parity["max_abs_err"] <= config.atol or parity["max_rel_err"] <= config.rtol


def test_multihead_attention_prunes_and_runs():
    model, before, records, data = _prune("attention_classifier", "sequences")
    attention = model.attention
    assert attention.embed_dim < 48 and attention.num_heads == 4
    assert attention.head_dim * attention.num_heads == attention.embed_dim == model.norm.normalized_shape[0]
    assert count_params(model) < 0.5 * before
    assert _outputs(model, data.val[0][0]).shape == (8, 5)


def test_crnn_prunes_its_convolutions_and_keeps_the_lstm_whole(caplog):
    with caplog.at_level("WARNING", logger="edgeslim"):
        model, before, records, data = _prune("crnn", "line_images")
    assert model.convs[0].out_channels == 8 and model.convs[4].out_channels == 16  # 16 and 32, halved
    lstm = model.rnn
    assert (lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.bidirectional) == (128, 32, 2, True)
    (kept,) = records["kept_whole"]
    assert kept["module"] == "rnn" and "LSTM (2 layers, bidirectional)" in kept["reason"]
    assert "rnn kept whole" in caplog.text
    assert records["params_after"] == count_params(model) < before
    assert _outputs(model, data.val[0][0]).shape == (20, 4, 11)  # time-major (T, N, classes)


def test_a_gru_is_kept_whole_and_the_layers_before_it_still_prune():
    class Tagger(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32))
            self.gru = torch.nn.GRU(32, 16, batch_first=True)
            self.head = torch.nn.Linear(16, 3)

        def forward(self, x):
            return self.head(self.gru(self.embed(x))[0])

    inputs = torch.randn(2, 5, 8)
    ctx = StepContext(data=None, teacher=None, metric=None, example_inputs=inputs, candidate="t")
    model = apply_step(Tagger().eval(), make_step("prune", {"ratio": 0.5, "round_to": 4}), ctx)
    assert model.embed[0].out_features == 16 and model.embed[2].out_features == 32
    assert [kept["module"] for kept in ctx.records["kept_whole"]] == ["gru"]
    assert model(inputs).shape == (2, 5, 3)


def test_an_attention_with_a_fused_qkv_is_kept_whole_and_the_rest_prunes():
    class FusedAttention(torch.nn.Module):  # timm-style: one Linear makes q, k and v
        def __init__(self, dim=32, num_heads=4):
            super().__init__()
            self.num_heads, self.head_dim = num_heads, dim // num_heads
            self.qkv = torch.nn.Linear(dim, 3 * dim)
            self.proj = torch.nn.Linear(dim, dim)

        def forward(self, x):
            n, t, _ = x.shape
            q, k, v = self.qkv(x).reshape(n, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
            return self.proj(out.transpose(1, 2).reshape(n, t, -1))

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = FusedAttention()
            self.mlp = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 32))
            self.head = torch.nn.Linear(32, 3)

        def forward(self, x):
            x = x + self.attn(x)
            return self.head((x + self.mlp(x)).mean(1))

    inputs = torch.randn(2, 6, 32)
    ctx = StepContext(data=None, teacher=None, metric=None, example_inputs=inputs, candidate="t")
    model = apply_step(Block().eval(), make_step("prune", {"ratio": 0.5, "round_to": 4}), ctx)
    assert (model.attn.qkv.out_features, model.attn.proj.in_features) == (96, 32)
    assert model.mlp[0].out_features == 32
    (kept,) = ctx.records["kept_whole"]
    assert kept["module"] == "attn" and "4 heads" in kept["reason"]
    assert model(inputs).shape == (2, 3)


def test_compress_records_the_kept_lstm_in_the_manifest(cli, tmp_path):
    result = cli("compress", "--model", f"{REAL}:crnn", "--data", f"{REAL}:line_images",
                 "--metric", f"{REAL}:output_scale", "--prune", "0.5", "--round-to", "4", "--no-distill",
                 "--out", tmp_path / "crnn")
    assert result.exit_code == 0, result.stderr
    assert "warning: prune: rnn kept whole: LSTM (2 layers, bidirectional)" in result.stderr
    metrics = json.loads((tmp_path / "crnn" / "manifest.json").read_text())["metrics"]
    assert [kept["module"] for kept in metrics["kept_whole"]] == ["rnn"]
    assert metrics["params_after"] < metrics["params_before"]
