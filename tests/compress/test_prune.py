"""Structured pruning through the dependency graph, on architectures edgeslim was not shaped around."""
import pytest
import torch

from edgeslim.build import StepContext
from edgeslim.compress import make_step
from edgeslim.core.model_io import count_params, load_model
from edgeslim.core.specs import load_data
from helpers import spec


@pytest.fixture(scope="module")
def data():
    return load_data(spec("digits"))


def _prune(factory, data, ratio=0.5):
    model = load_model(spec(factory))
    ctx = StepContext(data=data, teacher=None, metric=None, example_inputs=data.sample_inputs(), candidate="t")
    before = count_params(model)
    pruned = __import__("edgeslim.compress", fromlist=["apply_step"]).apply_step(
        model, make_step("prune", {"ratio": ratio, "round_to": 4}), ctx)
    return pruned, before, ctx.records


@pytest.mark.parametrize("factory", ["small_cnn", "mobilenet", "transformer"])
def test_pruning_shrinks_and_keeps_the_classes(factory, data):
    model, before, records = _prune(factory, data)
    after = count_params(model)
    assert records == {"params_before": before, "params_after": after, "prune_importance": {
        "used": "l2", "asked": "auto", "why": "the output is class logits", "global": False}}
    assert after < 0.6 * before
    out = model(torch.from_numpy(data.val[0][0][:3]))
    assert out.shape == (3, 10)  # the output layer was found and kept whole


def test_depthwise_and_residual_channels_stay_coupled(data):
    model, _, _ = _prune("mobilenet", data)
    for block in model.blocks:
        depthwise = block.block[3]
        assert depthwise.groups == depthwise.in_channels == depthwise.out_channels
        if block.residual:
            assert block.block[0].in_channels == block.block[-1].num_features


def test_attention_width_stays_divisible_by_heads(data):
    model, _, _ = _prune("transformer", data)
    attention = model.attention
    assert attention.embed_dim < 64
    assert attention.embed_dim % attention.num_heads == 0
    assert attention.head_dim * attention.num_heads == attention.embed_dim
    assert model.norm1.normalized_shape == (attention.embed_dim,)
