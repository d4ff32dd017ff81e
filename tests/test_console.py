"""The console: stdout holds edgeslim's results only (also redirected to a file), progress and warnings are
`[edgeslim]` lines on stderr, and the libraries' own output (torchao's kernels, torch's pytree notice,
onnxruntime's `WARNING:root:` lines, NNCF's log and progress bars) reaches neither stream unless --debug.
Also: --help in sections, --debug and -q after the command, the gain line, progress bars."""
import io
import json
import os
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from helpers import spec

WROTE = re.compile(r"wrote (?P<out>\S+): (?P<kb>[\d.]+) KB, (?P<params>[\d,]+) params, accuracy (?P<accuracy>[\d.]+)")
GAIN = re.compile(r"(?P<name>[\w-]+): (?P<kb>[\d.]+) KB \((?P<ratio>[\d.]+)x smaller than the (?P<source_kb>[\d.]+) "
                  r"KB fp32 export\), accuracy (?P<accuracy>[\d.]+) \((?P<delta>[+-][\d.]+) points against "
                  r"(?P<source_accuracy>[\d.]+)\)")
# What the libraries print: none of it may reach the user without --debug.
NOISE = ("torchao", "_C_mxfp8", "_pytree", "register_constant", "WARNING:", "INFO:", "ERROR:", "Statistics collection",
         "Fast Bias", "Smooth Quant", "pre-processing", "UserWarning", "FutureWarning", "DeprecationWarning")
NO_WEIGHTS = ("[edgeslim] warning: no --weights: the model has its factory's initial weights (random, unless the "
              "factory loads trained ones)")
ENV = {**os.environ, "EDGESLIM_HISTORY": "off"}  # no run history in the working directory


def edgeslim(*args, stdout=subprocess.PIPE, timeout=600):
    """`edgeslim ARGS` as a shell runs it: stdout and stderr apart, neither a terminal."""
    return subprocess.run([sys.executable, "-m", "edgeslim", *map(str, args)], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, env=ENV, timeout=timeout)


def assert_only_edgeslim_lines(stderr: str) -> None:
    lines = stderr.splitlines()
    assert lines and all(line.startswith("[edgeslim] ") for line in lines), stderr
    assert not [word for word in NOISE if word in stderr], stderr


def manifest_of(bundle) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def check_result_lines(lines: list[str], bundle) -> None:
    """`wrote DIR: ...` and the gain line, each number as the bundle's manifest records it."""
    manifest = manifest_of(bundle)
    metrics, source = manifest["metrics"], manifest["metrics"]["source"]
    assert len(lines) == 2, lines
    wrote, gain = WROTE.fullmatch(lines[0]), GAIN.fullmatch(lines[1])
    assert wrote and gain, lines
    assert wrote["out"] == str(bundle) and gain["name"] == manifest["name"] == bundle.name
    assert wrote["kb"] == gain["kb"] == f"{metrics['size_bytes'] / 1024:.1f}"
    assert wrote["accuracy"] == gain["accuracy"] == f"{metrics['accuracy']:.2f}"
    assert gain["source_kb"] == f"{source['size_bytes'] / 1024:.1f}"
    assert gain["ratio"] == f"{source['size_bytes'] / metrics['size_bytes']:.1f}"
    assert gain["source_accuracy"] == f"{source['accuracy']:.2f}"
    assert gain["delta"] == f"{metrics['accuracy'] - source['accuracy']:+.2f}"


# -- the whole command, as a shell runs it -----------------------------------------------------------

def test_compress_with_qat_writes_only_its_results_to_a_redirected_stdout(tmp_path):
    """`edgeslim compress --qat 1 ... > out.txt`: QAT imports torchao (its kernels' load failures, torch's pytree
    notice) and calibrates with NNCF (its log and bars); none of it shows."""
    with open(tmp_path / "out.txt", "w") as out:
        done = edgeslim("compress", "--model", spec("small_cnn"), "--data", spec("digits"), "--qat", "1",
                        "--calibration-samples", "32", "--out", tmp_path / "qat", stdout=out)
    assert done.returncode == 0, done.stderr
    check_result_lines((tmp_path / "out.txt").read_text().splitlines(), tmp_path / "qat")
    assert_only_edgeslim_lines(done.stderr)
    assert done.stderr.splitlines()[-1] == NO_WEIGHTS
    step = re.search(r"^\[edgeslim\] qat: qat (.*)$", done.stderr, re.M)  # one line: its options not at defaults
    assert step and step[1].startswith("epochs=1") and "seed=" not in step[1], done.stderr


def test_compress_int8_and_validate_show_no_library_output(tmp_path):
    """A transformer's INT8 forms: NNCF with SmoothQuant, onnxruntime's static and dynamic quantizers (whose
    `WARNING:root:` lines name every bias and axis they skip); then validate, and an export to compare with."""
    model = ["--model", spec("transformer"), "--data", spec("digits")]
    built = edgeslim("compress", *model, "--quantize", "int8", "--calibration-samples", "32", "--out", tmp_path / "q")
    assert built.returncode == 0, built.stderr
    check_result_lines(built.stdout.splitlines(), tmp_path / "q")
    assert_only_edgeslim_lines(built.stderr)
    exported = edgeslim("export", *model, "--out", tmp_path / "fp32")
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.count("\n") == 1 and WROTE.fullmatch(exported.stdout.strip())
    assert exported.stderr.splitlines()[-1] == NO_WEIGHTS
    # the gain is against this very export (untrained: its weights differ, not its size)
    assert manifest_of(tmp_path / "q")["metrics"]["source"]["size_bytes"] == \
        manifest_of(tmp_path / "fp32")["metrics"]["size_bytes"]
    checked = edgeslim("validate", tmp_path / "fp32", tmp_path / "q", "--data", spec("digits"), "--runs", "5",
                       "--warmup", "1", "--out", tmp_path / "report.json")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("# edgeslim report\n") and not [w for w in NOISE if w in checked.stdout]
    assert_only_edgeslim_lines(checked.stderr)


def test_the_source_is_the_fp32_export_of_the_same_model(cli, cnn_bundles, weights, tmp_path):
    """With trained weights: the int8 bundle (ONNX steps only) and a pruned one (torch steps: the source exported
    apart) state their gain against what `edgeslim export` wrote, size and accuracy."""
    fp32 = manifest_of(cnn_bundles["fp32"])["metrics"]
    result = cli("compress", "--model", spec("small_cnn"), "--weights", weights["cnn"], "--data", spec("digits"),
                 "--prune", "0.5", "--epochs", "1", "--out", tmp_path / "pruned")
    assert result.exit_code == 0, result.stderr
    check_result_lines(result.stdout.splitlines(), tmp_path / "pruned")
    for bundle in (cnn_bundles["int8"], tmp_path / "pruned"):
        source = manifest_of(bundle)["metrics"]["source"]
        assert source["what"] == "fp32 export" and source["size_bytes"] == fp32["size_bytes"]
        assert source["accuracy"] == pytest.approx(fp32["accuracy"])


# -- the gain and its warning ---------------------------------------------------------------------------

def _manifest(accuracy, size=23_000, source_accuracy=97.23, source_size=259_000, **metrics):
    return {"name": "small", "metrics": {"size_bytes": size, "accuracy": accuracy, **metrics,
                                         "source": {"what": "fp32 export", "size_bytes": source_size,
                                                    "accuracy": source_accuracy}}}


def test_the_gain_line_and_the_warning_for_a_large_drop():
    from edgeslim.views import accuracy_drop_warning, gain_text

    assert gain_text(_manifest(95.56)) == ("small: 22.5 KB (11.3x smaller than the 252.9 KB fp32 export), "
                                           "accuracy 95.56 (-1.67 points against 97.23)")
    assert accuracy_drop_warning(_manifest(95.56)) is None  # 1.67 points: within 2% of 97.23
    assert accuracy_drop_warning(_manifest(94.10)) == ("small: accuracy 94.10 is 3.13 points below the fp32 "
                                                       "export's 97.23, a drop of more than 2%")
    assert accuracy_drop_warning(_manifest(50.0, accuracy_control={"met": False})) is None  # its gate says so
    assert gain_text(_manifest(97.0, size=300_000)).startswith("small: 293.0 KB (1.2x larger than the 252.9 KB")
    unmeasured = _manifest(95.56, source_accuracy=None)
    assert gain_text(unmeasured).endswith("fp32 export)") and accuracy_drop_warning(unmeasured) is None
    assert gain_text({"name": "fp32", "metrics": {"size_bytes": 1, "accuracy": 1.0}}) is None


def test_a_step_s_line_shows_only_the_options_not_at_their_defaults():
    import edgeslim.compress  # noqa: F401  (registers the steps)
    from edgeslim.build import _options
    from edgeslim.compress import make_step

    assert _options(make_step("int8")) == ""
    assert _options(make_step("prune", {"ratio": 0.3, "round_to": 4})) == "ratio=0.3 round_to=4"
    assert _options(make_step("int8", {"in_float": ["fc"], "subset_size": 64})) == "subset_size=64 in_float=['fc']"


# -- options: --help in sections, --debug and -q after the command ---------------------------------------

def invoke(*args):
    from edgeslim.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def test_help_lists_the_options_in_sections_each_with_a_line_and_its_default():
    shown = invoke("compress", "--help")
    assert shown.exit_code == 0, shown.stderr
    headings = [line for line in shown.stdout.splitlines() if re.fullmatch(r"[A-Z]\w+:", line)]
    assert headings == ["Input:", "Prune:", "Distill:", "Quantize:", "Budget:", "Export:", "Output:"]
    section = shown.stdout.split("Quantize:")[1].split("Budget:")[0]
    assert "--calibration-samples" in section and "[default: 300]" in section and "--qat-lr" in section
    assert "--target-latency" in shown.stdout.split("Budget:")[1].split("Export:")[0]
    assert "-q, --quiet" in shown.stdout.split("Output:")[1]


def test_every_option_of_every_command_has_a_help_line():
    from edgeslim.cli import main

    missing = [(name, param.opts) for name, command in main.commands.items() for param in command.params
               if isinstance(param, __import__("click").Option) and not param.help]
    assert missing == []


def test_quiet_after_the_command_hides_progress(tmp_path):
    args = ["export", "--model", spec("small_cnn"), "--data", spec("digits")]
    loud = invoke(*args, "--out", tmp_path / "loud")
    assert loud.exit_code == 0 and "[edgeslim] loud: export to ONNX" in loud.stderr, loud.stderr
    quiet = invoke(*args, "--out", tmp_path / "quiet", "-q")
    assert quiet.exit_code == 0, quiet.stderr
    assert quiet.stderr == NO_WEIGHTS + "\n" and WROTE.fullmatch(quiet.stdout.strip())


def test_debug_after_the_command_shows_the_traceback(tmp_path, monkeypatch):
    import edgeslim.sdk

    def broken(*_):
        raise RuntimeError("list index out of range in the manifest reader")

    monkeypatch.setattr(edgeslim.sdk, "read_manifest", broken)
    plain = invoke("inspect", tmp_path)
    assert plain.exit_code == 3 and "Traceback" not in plain.stderr
    for args in (["inspect", tmp_path, "--debug"], ["-q", "inspect", "--debug", tmp_path]):
        debug = invoke(*args)
        assert debug.exit_code == 3 and "Traceback" in debug.stderr, args
        assert debug.stderr.rstrip().splitlines()[-1] == plain.stderr.strip()


# -- the libraries' output, configured as the CLI does --------------------------------------------------

LIBRARIES = """
import logging, sys, warnings
{configure}
import torch, nncf
print([type(h).__name__ for h in logging.getLogger().handlers])
logging.getLogger("torch.utils._pytree").warning("pytree notice")
logging.getLogger("torchao").warning("Failed to load _C_mxfp8.so")
logging.warning("Please consider to run pre-processing")
logging.getLogger("nncf").info("nncf info")
logging.getLogger("nncf").error("nncf error")
warnings.warn_explicit("torch internals", UserWarning, "fx.py", 1, module="torch.fx")
print("result")
"""


@pytest.mark.parametrize("mode", ["cli", "debug", "library"])
def test_library_output_is_silenced_shown_with_debug_and_left_alone_in_a_library(mode):
    configure = {"cli": "from edgeslim.core.progress import configure; configure()",
                 "debug": "from edgeslim.core.progress import configure; configure(debug=True)",
                 "library": "import edgeslim.compress.quantize, edgeslim.compress.qat"}[mode]
    done = subprocess.run([sys.executable, "-c", LIBRARIES.format(configure=configure)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    if mode == "cli":  # torch and NNCF were imported after configure(): their settings are applied then
        assert done.stdout == "['_LibraryLines']\nresult\n" and done.stderr == "ERROR:nncf:nncf error\n"
    elif mode == "debug":
        assert done.stdout == "['_LibraryLines']\nresult\n"  # NNCF's lines on stderr: stdout holds results only
        for line in ("pytree notice", "WARNING:torchao:Failed to load _C_mxfp8.so",
                     "WARNING:root:Please consider to run pre-processing", "INFO:nncf:nncf info",
                     "ERROR:nncf:nncf error", "UserWarning: torch internals"):
            assert line in done.stderr, (line, done.stderr)
    else:  # as a library edgeslim configures nothing: NNCF logs to stdout as NNCF does
        assert done.stdout == "[]\nINFO:nncf:nncf info\nERROR:nncf:nncf error\nresult\n"


# -- progress bars ------------------------------------------------------------------------------------------

@pytest.fixture
def bars(monkeypatch):
    """The bars as the CLI turns them on, stdout and the settings restored afterwards."""
    from edgeslim.core import progress

    monkeypatch.setattr(progress, "REDRAW_SECONDS", 0.0)
    progress.configure(quiet=False)
    yield progress
    progress.configure(quiet=False)


def test_off_a_terminal_a_bar_writes_no_carriage_return_and_nothing_for_a_short_loop(bars, capsys):
    with bars.progress("distill epoch 1/2", total=4) as advance:
        for _ in range(4):
            advance()
    assert capsys.readouterr().err == ""


def test_off_a_terminal_a_long_loop_prints_plain_lines(bars, capsys, monkeypatch):
    monkeypatch.setattr(bars, "LINE_SECONDS", 0.0)
    with bars.progress("distill epoch 1/2", total=4) as advance:
        for _ in range(5):  # one past its total: the bar stays at 100%
            advance()
    lines = capsys.readouterr().err.splitlines()
    assert "\r" not in "".join(lines) and len(lines) == 5
    shown = [re.fullmatch(r"\[edgeslim\] distill epoch 1/2: (\d)/4 batches \((\d+)%\), [\d.]+/s, (\d:\d\d) left",
                          line) for line in lines]
    assert all(shown), lines
    assert [(m[1], m[2]) for m in shown] == [("1", "25"), ("2", "50"), ("3", "75"), ("4", "100"), ("4", "100")]
    assert shown[-1][3] == "0:00"


class Terminal(io.StringIO):
    encoding = "utf-8"

    def isatty(self):
        return True


def test_on_a_terminal_a_bar_is_drawn_in_place_and_log_lines_go_above_it(bars, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with bars.progress("calibration", total=2, unit="samples") as advance:
        advance()
        bars.log("halfway")
        with bars.progress("inner", total=9) as inner:  # one bar at a time: the inner one is not drawn
            inner()
        advance()
    text = terminal.getvalue()
    drawn = re.findall(r"\rcalibration \[(█*) *\] (\d)/2 samples \((\d+)%\), [\d.]+/s, \d:\d\d left\x1b\[K", text)
    assert [(len(bar), done, percent) for bar, done, percent in drawn] == \
        [(12, "1", "50"), (12, "1", "50"), (24, "2", "100")]
    assert "\r\x1b[K[edgeslim] halfway\n" in text and "inner" not in text
    assert text.endswith("\r\x1b[K")  # erased: the caller's log line takes its place


def test_no_bars_with_quiet_or_in_a_library(bars, monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    bars.configure(quiet=True)
    with bars.progress("fit", total=3) as advance:
        advance()
    monkeypatch.setitem(bars._SETTINGS, "bars", False)  # as a program that never called configure()
    with bars.progress("fit", total=3) as advance:
        advance()
    assert sys.stderr.getvalue() == ""


@pytest.mark.parametrize("debug", [False, True])
def test_transformers_loading_bars_and_notices_follow_debug(debug):
    """A user's factory that calls from_pretrained draws transformers' "Loading weights" bar: off unless --debug."""
    script = (f"from edgeslim.core.progress import configure; configure(debug={debug})\n"
              "from transformers.utils import logging as tl\n"
              "print(tl.is_progress_bar_enabled(), tl.get_verbosity())\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    import logging

    assert done.stdout.split() == ([str(debug), str(logging.WARNING if debug else logging.ERROR)])


def test_inspect_names_the_source_model_and_how_distillation_ran():
    from edgeslim.views import inspect_text

    manifest = {"name": "small", "format": "edgeslim-bundle/1", "inputs": [], "outputs": [], "sha256": {},
                "source_model": {"model": "m.py:net", "weights": "w.pt", "weights_sha256": "0fad73397244ab",
                                 "params": 1093642},
                "metrics": {"distill_run": {"ranks": 2, "backend": "gloo", "precision": "fp32", "teacher": "cached"},
                            "distill_history": [{"epoch": 1, "loss": 0.9}, {"epoch": 2, "loss": 0.3255}]}}
    text = inspect_text(manifest)
    assert "  source  m.py:net: w.pt (sha256 0fad73397244), 1,093,642 params" in text
    assert "  distill 2 epochs, 2 ranks (gloo), fp32, teacher cached, final loss 0.3255" in text
