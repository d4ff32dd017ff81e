"""Output importance ranks channels by what the data sends through them, not by the size of their weights."""
import numpy as np
import pytest
import torch
from torch import nn

from edgeslim.build import StepContext
from edgeslim.compress import apply_step, make_step
from edgeslim.core.data import DataSplits


class Embedder(nn.Module):
    """8 features -> 32 hidden -> 8-d embedding. Hidden units 0-15 have large weights but read features 0-3,
    which the data never sets; units 16-31 have small weights and carry everything the output holds."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.hidden, self.out = nn.Linear(8, 32), nn.Linear(32, 8)
        with torch.no_grad():
            self.hidden.weight.zero_()
            self.hidden.weight[:16, :4] = 5.0 * torch.randn(16, 4)
            self.hidden.weight[16:, 4:] = 0.3 * torch.randn(16, 4)
            self.hidden.bias.zero_()

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x)))


def _data() -> DataSplits:
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(4):
        x = rng.normal(size=(32, 8)).astype(np.float32)
        x[:, :4] = 0.0                      # features 0-3 are never set
        batches.append((x, None))
    return DataSplits(val=[(x, np.zeros(len(x), dtype=np.float32)) for x, _ in batches], train=batches)


def _pruned(importance: str) -> tuple[nn.Module, dict]:
    data, model = _data(), Embedder()
    ctx = StepContext(data=data, teacher=None, metric=None, example_inputs=data.sample_inputs(), candidate="t")
    pruned = apply_step(model, make_step("prune", {"ratio": 0.5, "round_to": 4, "importance": importance}), ctx)
    return pruned, ctx.records


def _cosine_to_original(model) -> float:
    x = torch.from_numpy(_data().val[0][0])
    with torch.no_grad():
        a, b = model(x), Embedder()(x)
    return float(nn.functional.cosine_similarity(a, b, dim=-1).mean())


def test_output_importance_removes_the_channels_the_data_never_uses():
    by_output, records = _pruned("output")
    by_weight, _ = _pruned("l2")
    assert by_output.hidden.out_features == by_weight.hidden.out_features == 16
    assert _cosine_to_original(by_output) == pytest.approx(1.0, abs=1e-5)   # only idle units went
    assert _cosine_to_original(by_weight) < 0.9                            # the large idle ones stayed
    assert records["prune_importance"] == {"used": "output", "asked": "output", "why": "named in the config",
                                           "global": True}


def test_auto_takes_output_importance_for_an_embedding_and_ranks_globally():
    model, records = _pruned("auto")
    assert records["prune_importance"] == {"used": "output", "asked": "auto",
                                           "why": "the output is an embedding or features", "global": True}
    assert _cosine_to_original(model) == pytest.approx(1.0, abs=1e-5)


def test_a_bad_importance_is_one_sentence():
    from edgeslim.core.errors import ConfigError

    with pytest.raises(ConfigError, match="prune.importance"):
        make_step("prune", {"importance": "taylor"})
