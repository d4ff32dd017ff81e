"""Pruning keeps the model's output width, and prunes layers the model computes but does not return
consistently (all-MiniLM-L6-v2's pooler under mean pooling ended in 'mat1 and mat2 shapes cannot be
multiplied' before)."""
import torch
from fixtures.real_arch import pooled_encoder

from edgeslim.build import StepContext
from edgeslim.compress import apply_step, make_step
from edgeslim.core.model_io import count_params


def test_an_encoder_keeps_its_output_width_and_its_unused_branch_follows():
    model = pooled_encoder()
    example = torch.randn(4, 6, 16)
    before = count_params(model)
    ctx = StepContext(data=None, teacher=None, metric=None, example_inputs=example, candidate="t")
    pruned = apply_step(model, make_step("prune", {"ratio": 0.5, "round_to": 8}), ctx)
    with torch.no_grad():
        out = pruned(example)
    assert out.shape == (4, 32)                          # the embedding width is the output: kept
    assert pruned.body.up.out_features == 32             # the hidden layer is pruned
    assert pruned.body.pooler.in_features == pruned.body.norm.normalized_shape[0] == 32
    assert count_params(pruned) < before
