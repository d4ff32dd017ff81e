"""The SDK's timing inputs: a sequence is as long as the recorded example, else 64, or what the caller says."""
import json
import re

import numpy as np
import pytest
from onnx import TensorProto, helper

from edgeslim.export.bundle import write_unverified_bundle
from edgeslim.sdk import InputError, load
from edgeslim.sdk.model import SYMBOLIC_DIM


@pytest.fixture(scope="module")
def token_model(tmp_path_factory):
    """A BERT-shaped bundle: input_ids and attention_mask (batch, sequence) int64, features (batch, 4) float;
    out: the ids times the mask, as float (batch, sequence)."""
    nodes = [helper.make_node("Mul", ["input_ids", "attention_mask"], ["masked"]),
             helper.make_node("Cast", ["masked"], ["scores"], to=TensorProto.FLOAT)]
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
              for name in ("input_ids", "attention_mask")]
    inputs.append(helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4]))
    graph = helper.make_graph(nodes, "tokens", inputs,
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "sequence"])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return write_unverified_bundle(proto, tmp_path_factory.mktemp("tokens") / "bundle", "tokens")


def _shapes(feed: dict) -> dict:
    return {name: value.shape for name, value in feed.items()}


def test_a_sequence_without_a_recorded_example_is_64_long(token_model):
    model = load(token_model)
    assert SYMBOLIC_DIM == 64
    assert _shapes(model.sample_inputs(batch=2)) == {"input_ids": (2, 64), "attention_mask": (2, 64),
                                                     "features": (2, 4)}
    stats = model.benchmark(runs=2, warmup=1)
    assert stats["shapes"] == {"input_ids": [1, 64], "attention_mask": [1, 64], "features": [1, 4]}


def test_the_recorded_example_sets_the_length_of_every_input_sharing_the_dim(token_model, tmp_path):
    import shutil

    bundle = shutil.copytree(token_model, tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["inputs"][0]["example_shape"] = [16, 12]      # as exported from a batch of 16 texts of 12 tokens
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    model = load(bundle)
    assert model.inputs[0].example_shape == (16, 12) and model.inputs[1].example_shape is None
    feed = model.sample_inputs(batch=3)
    assert _shapes(feed) == {"input_ids": (3, 12), "attention_mask": (3, 12), "features": (3, 4)}
    assert set(np.unique(feed["input_ids"])) <= {0, 1} and feed["features"].dtype == np.float32
    assert model.benchmark(runs=2, warmup=1)["shapes"]["attention_mask"] == [1, 12]


def test_the_caller_overrides_a_dim_by_name_or_an_input_whole(token_model):
    model = load(token_model)
    assert _shapes(model.sample_inputs(shape={"sequence": 128}))["attention_mask"] == (1, 128)
    whole = {"input_ids": (2, 5), "attention_mask": [2, 5]}
    assert _shapes(model.sample_inputs(batch=2, shape=whole))["input_ids"] == (2, 5)
    assert model.benchmark(runs=2, warmup=1, shape={"sequence": 7})["shapes"]["input_ids"] == [1, 7]


@pytest.mark.parametrize("shape, message", [
    ({"tokens": 8}, "shape names 'tokens', which is neither an input (input_ids, attention_mask, features) nor a "
                    "symbolic dim (sequence) of model 'tokens'"),
    ({"batch": 8}, "shape names 'batch', which is neither an input"),
    ({"sequence": 0}, "shape 'sequence' must be a positive whole number, got 0"),
    ({"sequence": 2.5}, "shape 'sequence' must be a positive whole number, got 2.5"),
    ({"input_ids": (4, 5)}, "shape for input 'input_ids' must be 2 positive whole numbers like [batch, sequence] "
                            "with 1 (the batch) at axis 0, got (4, 5)"),
    ({"input_ids": (1,)}, "shape for input 'input_ids' must be 2 positive whole numbers"),
    ({"features": (1, 5)}, "input 'features' must have shape [batch, 4], got (1, 5) (dim 1 should be 4)"),
    ([("sequence", 8)], "shape must be a dict of input names or symbolic dim names, got list"),
])
def test_a_bad_override_is_one_sentence(token_model, shape, message):
    with pytest.raises(InputError, match=re.escape(message)):
        load(token_model).benchmark(runs=1, warmup=0, shape=shape)
