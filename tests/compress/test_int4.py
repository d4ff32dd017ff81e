"""Weight-only INT4 (onnxruntime's MatMulNBits) through `edgeslim compress --quantize int4`, on a real tiny
BertModel and the small CNN whose classifier torch exports as Gemm."""
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgeslim.compress import make_step
from edgeslim.core.coverage import coverage_text
from edgeslim.core.errors import ConfigError
from edgeslim.core.specs import load_data
from edgeslim.plan import OptionConflict, PlanOptions
from helpers import assert_one_sentence, spec

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real_arch.py"
SLOWER = 1.05  # edgeslim.compress.int8_forms.SLOWER: past it, a model is slower than its float parent


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def _outputs(bundle: Path, batches: list) -> np.ndarray:
    from edgeslim.sdk import load

    model = load(bundle)
    return np.concatenate([model.predict(inputs) for inputs, _ in batches])


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return float(np.min((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def _check_speed_note(manifest: dict, stdout: str) -> None:
    """Slower than float on this host: kept (a size mode) with a note in the manifest and below `wrote`."""
    record = manifest["metrics"]["int4"]
    assert record["measured_on"] == "cpu, alternating in one process"
    if record["x_parent"] > SLOWER:
        note = manifest["metrics"]["speed_note"]
        assert note == (f"int4 weight-only: {record['x_parent']:.2f}x slower than the float parent on cpu; "
                        "chosen for size")
        assert f"\nnote: {note}" in stdout
    else:
        assert "speed_note" not in manifest["metrics"] and "note:" not in stdout


@pytest.fixture(scope="module")
def bert(cli, tmp_path_factory):
    pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("bert-int4")
    common = ["--model", f"{REAL}:sentence_encoder", "--data", f"{REAL}:tokens", "--metric", f"{REAL}:output_scale"]
    results = {name: cli(command, *common, *flags, "--out", folder / name)
               for name, command, flags in (("fp32", "export", []), ("int4", "compress", ["--quantize", "int4"]))}
    for result in results.values():
        assert result.exit_code == 0, result.stderr
    return {"fp32": folder / "fp32", "int4": folder / "int4", "stdout": results["int4"].stdout}


def test_bert_matmul_weights_become_matmulnbits(bert):
    manifest = _manifest(bert["int4"])
    record, coverage = manifest["metrics"]["int4"], manifest["metrics"]["int8_coverage"]
    # 2 layers x (query, key, value, attention output, FFN in and out); the two attention products have no weight.
    assert record["matmul_nbits"] == record["matmuls"] == 12 == manifest["ops"]["MatMulNBits"]
    assert coverage["families"]["matmul"]["int4"] == record["matmul_nbits"] and coverage["int4"] == 12
    assert coverage["families"]["matmul"]["float"] == 2 * 2
    assert coverage_text(coverage) == "integer kernels: 12/16 matmul int4"
    assert (record["block_size"], record["symmetric"], record["accuracy_level"]) == (32, True, 4)
    assert manifest["compression"] == [make_step("int4").to_dict()]
    model = onnx.load(bert["int4"] / "model.onnx")
    nbits = [node for node in model.graph.node if node.op_type == "MatMulNBits"]
    assert {next(a.i for a in node.attribute if a.name == "bits") for node in nbits} == {4}


def test_bert_int4_is_smaller_and_close_to_fp32(bert):
    fp32, int4 = _manifest(bert["fp32"]), _manifest(bert["int4"])
    assert int4["metrics"]["size_bytes"] < 0.75 * fp32["metrics"]["size_bytes"]  # the embeddings stay float
    val = load_data(f"{REAL}:tokens").val
    cosine = _min_cosine(_outputs(bert["fp32"], val), _outputs(bert["int4"], val))
    print(f"int4 BERT: min cosine {cosine:.5f} against fp32")
    assert cosine > 0.99
    _check_speed_note(int4, bert["stdout"])


def test_inspect_shows_int4_coverage(cli, bert):
    result = cli("inspect", bert["int4"])
    assert result.exit_code == 0, result.stderr
    assert "  integer kernels: 12/16 matmul int4\n" in result.stdout
    assert "  int4    12 of 12 MatMul weights as MatMulNBits (block 32, accuracy_level 4)" in result.stdout


def test_a_gemm_classifier_is_quantized_as_a_matmul(cli, tmp_path):
    """torch writes nn.Linear on 2-D input as Gemm, which MatMulNBits does not replace: it becomes MatMul + Add."""
    import torch

    from edgeslim.core.model_io import load_model

    weights = tmp_path / "cnn.pt"
    torch.save(load_model(spec("small_cnn")).state_dict(), weights)
    common = ["--model", spec("small_cnn"), "--weights", weights, "--data", spec("digits")]
    for name, command, flags in (("fp32", "export", []), ("int4", "compress", ["--quantize", "int4"])):
        result = cli(command, *common, *flags, "--out", tmp_path / name)
        assert result.exit_code == 0, result.stderr
    assert "most convolutions and matmuls" not in result.stderr  # int4 leaves convolutions float by design
    manifest = _manifest(tmp_path / "int4")
    record = manifest["metrics"]["int4"]
    assert (record["gemms_as_matmuls"], record["matmul_nbits"]) == (1, 1)
    assert "Gemm" not in manifest["ops"] and manifest["ops"]["MatMulNBits"] == 1
    val = load_data(spec("digits")).val
    assert _min_cosine(_outputs(tmp_path / "fp32", val), _outputs(tmp_path / "int4", val)) > 0.99


def test_a_model_without_matmul_weights_is_one_sentence(cli, tmp_path):
    """The small CNN's only weight matrix (its classifier, 64 rows) is smaller than one block of 128."""
    result = cli("compress", "--model", spec("small_cnn"), "--data", spec("digits"), "--quantize", "int4",
                 "--int4-block-size", "128", "--out", tmp_path / "int4")
    assert_one_sentence(result, "--quantize int4 quantizes MatMul weights, and this model has none with at least "
                                "128 rows; use int8")
    assert not (tmp_path / "int4").exists()


@pytest.mark.parametrize("flags, words", [
    (["--quantize", "int4", "--int4-block-size", "10"],
     "int4.block_size=10 is not allowed: it must be a power of two of at least 16"),
    (["--quantize", "int4", "--int4-block-size", "48"], "int4.block_size=48 is not allowed"),
    (["--quantize", "int8", "--int4-block-size", "64"],
     "--int4-block-size sets INT4 quantization; it cannot go with --quantize int8"),
])
def test_bad_options_exit_2_before_any_work(cli, tmp_path, flags, words):
    result = cli("compress", "--model", spec("small_cnn"), "--data", spec("digits"), *flags, "--out", tmp_path / "b")
    assert result.exit_code == 2 and words in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "b").exists()


def test_int4_options_are_checked_in_recipes_too():
    with pytest.raises(ConfigError, match="int4.accuracy_level=7 is not allowed"):
        make_step("int4", {"accuracy_level": 7})
    with pytest.raises(ConfigError, match="step 'int4' option 'symmetric' must be true or false"):
        make_step("int4", {"symmetric": "yes"})
    with pytest.raises(OptionConflict):
        PlanOptions(quantize="none", int4_block_size=64)
    assert make_step("int4", {"block_size": 64, "symmetric": False}).to_dict() == {
        "step": "int4", "version": 1, "block_size": 64, "symmetric": False, "accuracy_level": 4}


def test_coverage_text_names_int4_apart_and_keeps_int8_text():
    from edgeslim.core.coverage import kernel_counts_text, mostly_float

    int8 = {"families": {"conv": {"int8": 37, "float": 0}, "gemm": {"int8": 1, "float": 0}}}
    assert coverage_text(int8) == "int8 kernels: 37/37 conv, 1/1 gemm"
    int4 = {"families": {"matmul": {"int8": 0, "int4": 36, "float": 12}, "attention": {"int8": 0, "float": 6}}}
    assert coverage_text(int4) == "integer kernels: 36/48 matmul int4, 0/6 attention"
    mixed = {"families": {"matmul": {"int8": 2, "int4": 10, "float": 0}}}
    assert kernel_counts_text(mixed) == "12/12 matmul (10 int4)"
    assert not mostly_float(int4) and mostly_float({"families": {"matmul": {"int8": 0, "int4": 5, "float": 6}}})
