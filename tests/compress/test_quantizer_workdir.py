"""onnxruntime's quantizers write nothing into the user's working directory (its symbolic shape inference
saved sym_shape_infer_temp.onnx and a UUID-named .data file there for every BERT-style model, and left them)."""
import os

from helpers import REPO


def test_quantizing_a_bert_encoder_leaves_the_working_directory_alone(cli, tmp_path, monkeypatch):
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    monkeypatch.chdir(user)
    real_arch = REPO / "tests" / "fixtures" / "real_arch.py"
    result = cli("compress", "--model", f"{real_arch}:sentence_encoder", "--data", f"{real_arch}:tokens",
                 "--metric", f"{real_arch}:output_scale", "--quantize", "int8", "--out", user / "int8")
    assert result.exit_code == 0, result.stderr
    assert sorted(os.listdir(user)) == ["int8", "notes.txt"]
