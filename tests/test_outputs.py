"""Outputs: a user's files survive every command that takes --out; a bundle replacement killed at
any step leaves the old or the new bundle whole; one writer per path; modes follow the umask."""
import os
import shutil
import signal
import subprocess
import sys

import pytest

from helpers import REPO, spec

# A child that replaces the bundle at argv[1] with a tiny real one named argv[2], through the
# writer every command uses (staging, save_model, manifest, swap).
WRITER = """
import sys
from pathlib import Path
import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto
from edgeslim.export.bundle import manifest_for, save_model
from edgeslim.core.outputs import staged_bundle, write_json

out, name, scale = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
weight = numpy_helper.from_array(np.full((4, 4), scale, np.float32), "w")
graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], name,
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], [weight])
proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
with staged_bundle(out) as staging:
    files = save_model(proto, staging)
    write_json(staging / "manifest.json", manifest_for(proto, name, files, staging, [], {}))
"""

FAULT_POINTS = ["staging-created", "wrote-tmp:manifest.json", "staging-filled", "swapped", "removing-old"]


def _write_bundle(out, name, scale, fault=None, wrapper=()):
    env = dict(os.environ)
    env.pop("EDGESLIM_FAULT_AT", None)
    if fault:
        env["EDGESLIM_FAULT_AT"] = fault
    return subprocess.run([*wrapper, sys.executable, "-c", WRITER, str(out), name, str(scale)],
                          capture_output=True, text=True, env=env, timeout=120)


def _bundle_at(out):
    """The name and output of the bundle at `out`, loaded and verified through the SDK."""
    import numpy as np

    from edgeslim.sdk import load

    model = load(out)
    return model.name, float(model.predict(np.ones((1, 4), np.float32))[0, 0])


def _leftovers(folder, name):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{name}."))


def _assert_refused(result, fragment):
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeslim: error: "), result.stderr
    assert fragment in lines[0], lines[0]


@pytest.fixture
def user_folder(tmp_path):
    folder = tmp_path / "u"
    (folder / "sub").mkdir(parents=True)
    (folder / "thesis.txt").write_text("keep")
    (folder / "sub" / "data.csv").write_text("1,2")
    return folder


def _user_files_intact(folder):
    return (folder / "thesis.txt").read_text() == "keep" and (folder / "sub" / "data.csv").read_text() == "1,2"


BUILD = ["--model", "edgeslim.demo:digits_cnn", "--data", "edgeslim.demo:digits_data"]


@pytest.mark.parametrize("command", [["export", *BUILD], ["compress", *BUILD, "--quantize", "int8"],
                                     ["compress", *BUILD, "--target-size", "0.3"]])
def test_build_commands_refuse_a_folder_of_user_files(cli, user_folder, command):
    _assert_refused(cli(*command, "--out", user_folder), "holds files edgeslim did not write (sub, thesis.txt)")
    assert _user_files_intact(user_folder) and sorted(p.name for p in user_folder.iterdir()) == ["sub", "thesis.txt"]


def test_run_refuses_user_files_in_its_folder_and_in_a_candidate_folder(cli, tmp_path, user_folder):
    _assert_refused(cli("run", "--out", user_folder), "holds files edgeslim did not write")
    out = tmp_path / "runout"
    (out / "fp32").mkdir(parents=True)
    (out / "fp32" / "notes.txt").write_text("mine")
    _assert_refused(cli("run", "--out", out), "holds files edgeslim did not write (fp32)")
    assert (out / "fp32" / "notes.txt").read_text() == "mine"


def test_document_outputs_are_checked(cli, cnn_bundles, tmp_path):
    report = tmp_path / "r.json"
    result = cli("validate", cnn_bundles["fp32"], "--data", spec("digits"), "--runs", "5", "--warmup", "1",
                 "--out", report)
    assert result.exit_code == 0, result.stderr
    original = report.read_bytes()
    # A Markdown path for the JSON report, the input as the HTML output, a user's file as the Markdown.
    _assert_refused(cli("validate", cnn_bundles["fp32"], "--data", spec("digits"), "--out", tmp_path / "rep.md"),
                    "must end in .json")
    _assert_refused(cli("report", report, "--html", report), "must end in .html")
    _assert_refused(cli("report", report, "--json", report), "is also an input of this command")
    (tmp_path / "notes.md").write_text("my notes")
    _assert_refused(cli("report", report, "--md", tmp_path / "notes.md"), "is a file edgeslim did not write")
    (tmp_path / "mine.json").write_text('{"my": "data"}')
    _assert_refused(cli("validate", cnn_bundles["fp32"], "--data", spec("digits"), "--out", tmp_path / "mine.json"),
                    "is a file edgeslim did not write")
    _assert_refused(cli("sensitivity", "--model", "edgeslim.demo:digits_cnn", "--data", "edgeslim.demo:digits_data",
                        "--out", tmp_path / "mine.json"), "is a file edgeslim did not write")
    assert report.read_bytes() == original
    assert (tmp_path / "notes.md").read_text() == "my notes"
    assert (tmp_path / "mine.json").read_text() == '{"my": "data"}'
    # edgeslim's own documents are replaced without --force; a user's with it.
    assert cli("report", report, "--md", tmp_path / "r.md", "--html", tmp_path / "r.html").exit_code == 0
    assert cli("report", report, "--md", tmp_path / "notes.md", "--force").exit_code == 0
    assert "# edgeslim report" in (tmp_path / "notes.md").read_text()


def test_force_writes_beside_the_users_files(cli, weights, user_folder):
    result = cli("export", "--model", spec("small_cnn"), "--weights", weights["cnn"], "--data", spec("digits"),
                 "--out", user_folder, "--force")
    assert result.exit_code == 0, result.stderr
    assert _user_files_intact(user_folder)
    from edgeslim.sdk import load

    assert load(user_folder).name == "u"


def test_replacing_a_bundle_swaps_it_whole(tmp_path):
    out = tmp_path / "b"
    assert _write_bundle(out, "old", 1.0).returncode == 0
    assert _bundle_at(out) == ("old", 4.0)
    done = _write_bundle(out, "new", 2.0)
    assert done.returncode == 0, done.stderr
    assert _bundle_at(out) == ("new", 8.0)
    assert _leftovers(tmp_path, "b") == []


@pytest.mark.parametrize("fault", FAULT_POINTS)
def test_a_replacement_killed_at_any_step_leaves_a_whole_bundle(tmp_path, fault):
    out = tmp_path / "b"
    assert _write_bundle(out, "old", 1.0).returncode == 0
    killed = _write_bundle(out, "new", 2.0, fault=fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    expected = ("new", 8.0) if fault in ("swapped", "removing-old") else ("old", 4.0)
    assert _bundle_at(out) == expected
    # The next writer recognises the killed run's staging folder and removes it.
    assert _write_bundle(out, "third", 3.0).returncode == 0
    assert _bundle_at(out) == ("third", 12.0)
    assert _leftovers(tmp_path, "b") == []


@pytest.mark.skipif(not shutil.which("strace"), reason="strace is not installed")
@pytest.mark.parametrize("syscall, when", [("renameat2", 1), ("unlink", 1), ("unlink", 2), ("rmdir", 1),
                                           ("rename", 1), ("mkdir", 1)])
def test_a_replacement_killed_at_a_syscall_leaves_a_whole_bundle(tmp_path, syscall, when):
    """strace kills the writer on entry to its Nth call of a file-system syscall."""
    out = tmp_path / "b"
    assert _write_bundle(out, "old", 1.0).returncode == 0
    strace = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=none", "-e",
              f"inject={syscall}:signal=KILL:when={when}"]
    _write_bundle(out, "new", 2.0, wrapper=strace)
    assert _bundle_at(out) in (("old", 4.0), ("new", 8.0))
    assert _write_bundle(out, "third", 3.0).returncode == 0
    assert _bundle_at(out) == ("third", 12.0)
    assert _leftovers(tmp_path, "b") == []


def test_a_second_writer_is_told_and_the_first_wins(cli, tmp_path):
    out = tmp_path / "b"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from edgeslim.core.outputs import claimed\n"
        "with claimed(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)"), str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        _assert_refused(cli("export", *BUILD, "--out", out), f"another edgeslim process is writing --out {out}")
        assert _write_bundle(out, "second", 1.0).returncode != 0 and not out.exists()
    finally:
        holder.kill()
        holder.wait()
    # The killed holder's lock is free again.
    assert _write_bundle(out, "after", 1.0).returncode == 0
    assert _bundle_at(out)[0] == "after"


@pytest.mark.parametrize("umask, folder_mode, file_mode", [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600),
                                                          (0o002, 0o775, 0o664)])
def test_modes_follow_the_umask(tmp_path, umask, folder_mode, file_mode):
    out = tmp_path / "b"
    previous = os.umask(umask)
    try:
        done = _write_bundle(out, "b", 1.0)
    finally:
        os.umask(previous)
    assert done.returncode == 0, done.stderr
    assert out.stat().st_mode & 0o777 == folder_mode
    for name in ("manifest.json", "model.onnx"):
        assert (out / name).stat().st_mode & 0o777 == file_mode, name


def test_report_documents_follow_the_umask(tmp_path):
    from edgeslim.core.outputs import write_document

    previous = os.umask(0o022)
    try:
        write_document(tmp_path / "r.json", {"format": "edgeslim-report/1"}, "json")
        write_document(tmp_path / "r.md", "# edgeslim report", "markdown")
    finally:
        os.umask(previous)
    assert {(tmp_path / n).stat().st_mode & 0o777 for n in ("r.json", "r.md")} == {0o644}


def test_writer_imports_nothing_heavy():
    """The output rules live in the core: no torch in a process that only writes documents."""
    done = subprocess.run([sys.executable, "-c", "import sys, edgeslim.core.outputs; print('torch' in sys.modules)"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.stdout.strip() == "False", done.stderr
