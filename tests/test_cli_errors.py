"""One error path: every usage or input error is one line `edgeslim: error: ...` and exit 2; a bug or a
crashed worker is exit 3 and asks for a report; --debug shows the whole chain of causes."""
import logging
import os
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgeslim.cli import main
from helpers import run_edgeslim, spec

BUILD = ["--model", "edgeslim.demo:digits_cnn", "--data", "edgeslim.demo:digits_data", "--out", "b"]

# Per subcommand (None: the group itself), the kinds of usage error it can meet, each with the
# arguments that make it and a fragment the one line must hold.
USAGE_ERRORS = {
    None: {"unknown option": (["--no-such-flag"], "no such option --no-such-flag for `edgeslim`"),
           "unknown command": (["frobnicate"], "no such command 'frobnicate' for `edgeslim`"),
           "close command": (["compres"], "no such command 'compres' for `edgeslim` (did you mean compress?)"),
           "flag with a value": (["--debug=yes"], "option '--debug' does not take a value")},
    "run": {"unknown option": (["run", "--fo"], "no such option --fo for `edgeslim run`"),
            "missing option": (["run"], "missing option --out for `edgeslim run`"),
            "bad type": (["run", ".", "--out", "o"],
                         "invalid value for RECIPE of `edgeslim run`: file '.' is a directory"),
            "missing value": (["run", "--out"], "option '--out' requires an argument"),
            "extra argument": (["run", "a.yaml", "b.yaml", "--out", "o"], "got unexpected extra argument (b.yaml)")},
    "export": {"unknown option": (["export", *BUILD, "--fo"], "no such option --fo for `edgeslim export`"),
               "missing option": (["export", "--data", "d.py:f", "--out", "b"],
                                  "missing option --model for `edgeslim export`"),
               "bad type": (["export", *BUILD, "--opset", "seventeen"],
                            "invalid value for --opset of `edgeslim export`: 'seventeen' is not a valid integer"),
               "missing value": (["export", *BUILD, "--weights"], "option '--weights' requires an argument"),
               "extra argument": (["export", *BUILD, "extra"], "got unexpected extra argument (extra)")},
    "compress": {"unknown option": (["compress", *BUILD, "--prun", "0.5"],
                                    "no such option --prun for `edgeslim compress` (did you mean one of --prune"),
                 "missing option": (["compress", "--model", "m.py:f", "--out", "b"],
                                    "missing option --data for `edgeslim compress`"),
                 "bad choice": (["compress", *BUILD, "--quantize", "int9"],
                                "invalid value for --quantize of `edgeslim compress`: 'int9' is not one of 'none'"),
                 "bad type": (["compress", *BUILD, "--prune", "half"], "'half' is not a valid float"),
                 "missing value": (["compress", *BUILD, "--quantize"], "option '--quantize' requires an argument"),
                 "extra argument": (["compress", *BUILD, "extra"], "got unexpected extra argument (extra)")},
    "sensitivity": {"unknown option": (["sensitivity", "--fo"], "no such option --fo for `edgeslim sensitivity`"),
                    "missing option": (["sensitivity", "--data", "d.py:f"],
                                       "missing option --model for `edgeslim sensitivity`"),
                    "bad type": (["sensitivity", "--model", "m.py:f", "--data", "d.py:f", "--calibration-samples",
                                  "many"], "invalid value for --calibration-samples of `edgeslim sensitivity`"),
                    "extra argument": (["sensitivity", "--model", "m.py:f", "--data", "d.py:f", "x"],
                                       "got unexpected extra argument (x)")},
    "validate": {"unknown option": (["validate", "b", "--fo"], "no such option --fo for `edgeslim validate`"),
                 "missing argument": (["validate", "--data", "d.py:f", "--out", "r.json"],
                                      "missing argument BUNDLES for `edgeslim validate`"),
                 "missing option": (["validate", "b", "--data", "d.py:f"],
                                    "missing option --out for `edgeslim validate`"),
                 "bad choice": (["validate", "b", "--data", "d.py:f", "--out", "r.json", "--io", "gpu"],
                                "invalid value for --io of `edgeslim validate`: 'gpu' is not one of 'host', 'device'"),
                 "out of range": (["validate", "b", "--data", "d.py:f", "--out", "r.json", "--runs", "0"],
                                  "invalid value for --runs of `edgeslim validate`: 0 is not in the range x>=1"),
                 "missing value": (["validate", "b", "--data"], "option '--data' requires an argument")},
    "report": {"unknown option": (["report", "r.json", "--fo"], "no such option --fo for `edgeslim report`"),
               "missing argument": (["report"], "missing argument REPORT.json for `edgeslim report`"),
               "bad type": (["report", "r.json", "--max-accuracy-drop", "one"],
                            "invalid value for --max-accuracy-drop of `edgeslim report`: 'one' is not a valid float"),
               "missing value": (["report", "r.json", "--against"], "option '--against' requires an argument"),
               "extra argument": (["report", "a.json", "b.json"], "got unexpected extra argument (b.json)")},
    "bench": {"unknown option": (["bench", "b", "--fo"], "no such option --fo for `edgeslim bench`"),
              "missing argument": (["bench"], "missing argument BUNDLE for `edgeslim bench`"),
              "bad choice": (["bench", "b", "--io", "gpu"], "invalid value for --io of `edgeslim bench`"),
              "out of range": (["bench", "b", "--warmup", "-1"], "-1 is not in the range x>=0"),
              "bad type": (["bench", "b", "--batch", "two"], "'two' is not a valid integer"),
              "extra argument": (["bench", "a", "b"], "got unexpected extra argument (b)")},
    "inspect": {"unknown option": (["inspect", "b", "--fo"], "no such option --fo for `edgeslim inspect`"),
                "missing argument": (["inspect"], "missing argument BUNDLE for `edgeslim inspect`"),
                "flag with a value": (["inspect", "b", "--json=yes"], "option '--json' does not take a value"),
                "extra argument": (["inspect", "a", "b"], "got unexpected extra argument (b)")},
    "devices": {"unknown option": (["devices", "--all"], "no such option --all for `edgeslim devices`"),
                "flag with a value": (["devices", "--json=1"], "option '--json' does not take a value"),
                "extra argument": (["devices", "cpu"], "got unexpected extra argument (cpu)")},
    "history": {"unknown option": (["history", "--fo"], "no such option --fo for `edgeslim history`"),
                "missing value": (["history", "--plot"], "option '--plot' requires an argument"),
                "flag with a value": (["history", "--json=1"], "option '--json' does not take a value"),
                "extra argument": (["history", "a", "b"], "got unexpected extra argument (b)")},
    "schema": {"unknown option": (["schema", "report", "--fo"], "no such option --fo for `edgeslim schema`"),
               "missing argument": (["schema"], "missing argument"),
               "bad choice": (["schema", "bundle"], "invalid value for KIND of `edgeslim schema`: 'bundle' is not one"),
               "extra argument": (["schema", "report", "recipe"], "got unexpected extra argument (recipe)")},
}
CASES = [pytest.param(args, fragment, id=f"{command or 'edgeslim'}-{kind}".replace(" ", "-"))
         for command, kinds in USAGE_ERRORS.items() for kind, (args, fragment) in kinds.items()]


def assert_one_line(result, fragment: str, code: int = 2, kind: str = "error") -> str:
    """Exit `code`, and stderr is exactly one line `edgeslim: <kind>: ...` holding `fragment`; no traceback."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"edgeslim: {kind}: "), lines[0]
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


def invoke(*args):
    """The CLI in-process, without --quiet (the `cli` fixture adds it)."""
    return CliRunner().invoke(main, [str(a) for a in args])


def test_every_subcommand_has_its_usage_errors_listed():
    assert set(USAGE_ERRORS) - {None} == set(main.commands)


@pytest.mark.parametrize("args, fragment", CASES)
def test_a_usage_error_is_one_line_and_exit_2(tmp_path, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)
    line = assert_one_line(invoke(*args), fragment)
    command = next((a for a in args if a in main.commands), None)
    assert line.endswith(f"; see `edgeslim{f' {command}' if command else ''} --help`"), line
    assert list(tmp_path.iterdir()) == []  # nothing was started


def test_a_usage_error_raised_by_a_command_body_is_one_line(tmp_path):
    result = invoke("compress", *BUILD[:-1], tmp_path / "b", "--quantize", "fp16", "--max-accuracy-drop", "1")
    assert_one_line(result, "--max-accuracy-drop")
    assert not (tmp_path / "b").exists()


def test_the_real_entry_point_names_the_command_not_the_interpreter():
    done = run_edgeslim("compress", "--fo", timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("edgeslim: error: no such option --fo for `edgeslim compress` (did you mean ")
    assert done.stderr.endswith("; see `edgeslim compress --help`\n") and done.stderr.count("\n") == 1


def test_help_and_version_are_click_s():
    from edgeslim.core.version import __version__

    version = invoke("--version")
    assert version.exit_code == 0 and version.stdout == f"edgeslim, version {__version__}\n"
    for args in (["--help"], ["compress", "--help"], ["-h"]):
        shown = invoke(*args)
        assert shown.exit_code == 0 and shown.stdout.startswith("Usage: ") and shown.stderr == "", args
    bare = invoke()  # click shows the help when given nothing
    assert "Usage: " in bare.stdout + bare.stderr and "Commands:" in bare.stdout + bare.stderr


# -- --debug: the whole chain of causes ------------------------------------------------------------

def _broken_weights(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"these bytes are no torch checkpoint")
    return path


def test_debug_shows_the_cause_a_one_line_error_hides(tmp_path):
    args = ["export", "--model", spec("small_cnn"), "--weights", _broken_weights(tmp_path), "--data",
            spec("digits"), "--out", tmp_path / "b"]
    plain = invoke("--quiet", *args)
    sentence = assert_one_line(plain, "could not be read")
    debug = invoke("--quiet", "--debug", *args)
    assert debug.exit_code == 2, debug.stderr
    # torch's own exception and where it was raised, then edgeslim's, then the same one sentence.
    cause = re.search(r"could not be read \((\w+: .*)\)", sentence).group(1)
    assert "Traceback (most recent call last)" in debug.stderr
    assert "torch/serialization.py" in debug.stderr and f"\n{cause}\n" in debug.stderr
    assert "During handling of the above exception, another exception occurred" in debug.stderr
    assert "edgeslim.core.errors.SpecError: weights file" in debug.stderr
    assert debug.stderr.rstrip().splitlines()[-1] == sentence
    assert not (tmp_path / "b").exists()


def test_debug_is_the_parsed_option_not_a_word_in_argv(tmp_path, monkeypatch):
    # A bundle path that happens to be the string "--debug" is no --debug flag.
    monkeypatch.setattr(sys, "argv", ["edgeslim", "--debug"])
    assert_one_line(invoke("inspect", tmp_path / "nothing"), "is not a directory")


# -- exit 3: a bug or a crash, never "bad input" ---------------------------------------------------

def test_an_internal_bug_exits_3_and_asks_for_a_report(tmp_path, monkeypatch):
    import edgeslim.sdk

    def broken(*_):
        raise RuntimeError("list index out of range in the manifest reader")

    monkeypatch.setattr(edgeslim.sdk, "read_manifest", broken)
    line = assert_one_line(invoke("inspect", tmp_path), "RuntimeError: list index out of range", code=3,
                           kind="internal error")
    assert "this is a bug in edgeslim, not bad input" in line and "report it" in line and "--debug" in line
    debug = invoke("--debug", "inspect", tmp_path)
    assert debug.exit_code == 3
    assert "Traceback" in debug.stderr and 'raise RuntimeError("list index out of range' in debug.stderr
    assert debug.stderr.rstrip().splitlines()[-1] == line


def test_a_message_that_spans_lines_is_one_line(tmp_path, monkeypatch):
    import edgeslim.sdk
    from edgeslim.core.errors import BundleError

    def refuse(bundle):
        raise BundleError("bundle 'b' is broken:\n  model.onnx: truncated\n  manifest.json: missing")

    monkeypatch.setattr(edgeslim.sdk, "read_manifest", refuse)
    line = assert_one_line(invoke("inspect", tmp_path), "bundle 'b' is broken: model.onnx: truncated manifest.json")
    assert line.endswith("manifest.json: missing")


def test_a_crashed_worker_exits_3_not_2(tmp_path, monkeypatch):
    import edgeslim.devices.targets
    import edgeslim.sdk
    from edgeslim.core.errors import WorkerCrashed

    assert not issubclass(WorkerCrashed, ValueError)

    class Crashing:
        def latency(self, *_):
            raise WorkerCrashed("the benchmark worker was killed by SIGSEGV before it replied")

    monkeypatch.setattr(edgeslim.sdk, "read_manifest", lambda bundle: {})
    monkeypatch.setattr(edgeslim.devices.targets, "get_target", lambda device: Crashing())
    line = assert_one_line(invoke("bench", tmp_path), "killed by SIGSEGV", code=3, kind="internal error")
    assert "not bad input" in line and "report it" in line and "--debug" in line


# -- inputs that are not arrays of numbers -------------------------------------------------------------

DATA = """
import numpy as np
LABELS = np.array([0, 1])
def words():
    return {"val": [(["a cat", "a dog"], LABELS)]}
def objects():
    return {"val": [(np.array([{"x": 1}, None], dtype=object), LABELS)], "train": [(np.zeros((2, 1, 8, 8)), LABELS)]}
def named():
    return {"val": [({"image": np.zeros((2, 1, 8, 8), np.float32), "caption": "two cats"}, LABELS)]}
def calibration_text():
    return {"val": [(np.zeros((2, 1, 8, 8), np.float32), LABELS)], "calibration": ["some text"]}
"""


@pytest.mark.parametrize("factory, fragment", [
    ("words", "returned 'val' batches whose input 0 is str 'a cat'"),
    ("objects", "returned 'val' batches whose inputs are a numpy array of dtype object"),
    ("named", "returned 'val' batches whose input 'caption' is str 'two cats'"),
    ("calibration_text", "returned 'calibration' batches whose inputs are str 'some text'"),
])
def test_data_that_is_not_numbers_is_bad_input(cli, tmp_path, factory, fragment):
    (tmp_path / "data.py").write_text(DATA)
    data_spec = f"{tmp_path / 'data.py'}:{factory}"
    line = assert_one_line(cli("export", "--model", "edgeslim.demo:digits_cnn", "--data", data_spec,
                               "--out", tmp_path / "b"), fragment)
    assert f"data factory {data_spec!r}" in line and "numpy arrays of numbers" in line
    assert not (tmp_path / "b").exists()


# -- logging: progress and warnings ---------------------------------------------------------------

def test_importing_edgeslim_configures_no_logging():
    code = ("import logging, edgeslim, edgeslim.sdk, edgeslim.core.progress\n"
            "mine = logging.getLogger('edgeslim')\n"
            "print([type(h).__name__ for h in mine.handlers], mine.level, logging.getLogger().handlers)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "['NullHandler'] 0 []", done.stderr


def test_quiet_hides_progress_but_not_warnings(capsys):
    from edgeslim.core.progress import LOGGER, configure, log, warn

    try:
        configure(quiet=True)
        log("step 1 of 2")
        warn("the bundle is larger than the budget")
        assert capsys.readouterr().err == "[edgeslim] warning: the bundle is larger than the budget\n"
        configure(quiet=False)
        configure(quiet=False)  # configured twice: still one line per record
        log("step 2 of 2")
        assert capsys.readouterr().err == "[edgeslim] step 2 of 2\n"
    finally:
        configure(quiet=False)
    assert LOGGER.level == logging.INFO and not LOGGER.propagate


NO_WEIGHTS = ("[edgeslim] warning: no --weights: the model has its factory's initial weights (random, unless the "
              "factory loads trained ones)\n")


def test_the_cli_shows_progress_unless_quiet_and_keeps_stdout_for_results(tmp_path):
    """NNCF's own progress bars not at all (edgeslim draws its own, on a terminal); with --quiet only warnings."""
    args = ["compress", "--model", spec("small_cnn"), "--data", spec("digits"), "--quantize", "int8",
            "--int8-backend", "nncf", "--calibration-samples", "32"]
    loud = invoke(*args, "--out", tmp_path / "loud")
    assert loud.exit_code == 0, loud.stderr
    assert loud.stdout.startswith("wrote ") and loud.stdout.count("\n") == 2, loud.stdout
    assert loud.stdout.splitlines()[1].startswith("loud: "), loud.stdout  # the gain against the fp32 export
    assert "[edgeslim] loud: export to ONNX" in loud.stderr and loud.stderr.endswith(NO_WEIGHTS)
    assert "Statistics collection" not in loud.stderr + loud.stdout
    quiet = invoke("--quiet", *args, "--out", tmp_path / "quiet")
    assert quiet.exit_code == 0, quiet.stderr
    assert quiet.stdout.startswith("wrote ") and quiet.stdout.count("\n") == 2, quiet.stdout
    # warnings only (the untrained model's accuracy may also fall more than 2% below its fp32 export's)
    assert quiet.stderr.endswith(NO_WEIGHTS), quiet.stderr
    assert all(line.startswith("[edgeslim] warning: ") for line in quiet.stderr.splitlines()), quiet.stderr


# -- an optional extra that is not installed -------------------------------------------------------

# A child process in which importing `module` fails as on an install without it, running the CLI on argv.
WITHOUT = """
import sys

class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == {module!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

sys.meta_path.insert(0, Absent())
sys.argv = ["edgeslim", "--quiet", *{args!r}]
from edgeslim.cli import main
main()
"""
CNN = ["--model", spec("small_cnn"), "--data", spec("digits")]
EXTRA_CASES = [
    ("torch", ["compress", *CNN, "--out", "b"], "compress needs torch, which is not installed here: "
                                                "pip install 'edgeslim[compress]'"),
    ("torch", ["export", *BUILD], "export needs torch, which is not installed here: pip install 'edgeslim[compress]'"),
    ("torch", ["sensitivity", *CNN], "sensitivity needs torch, which is not installed here"),
    ("torch", ["run", "--out", "demo"],
     "run needs torch, which is not installed here: pip install 'edgeslim[compress]'"),
    ("torch_pruning", ["compress", *CNN, "--prune", "0.5", "--out", "b"],
     "compress needs torch_pruning, which is not installed here: pip install 'edgeslim[compress]'"),
    ("nncf", ["compress", *CNN, "--quantize", "int8", "--int8-backend", "nncf", "--calibration-samples", "8",
              "--out", "b"], "compress needs nncf, which is not installed here: pip install 'edgeslim[compress]'"),
    # the demo's data factory: the generic rule for a factory missing a module, with the demo's extra named
    ("sklearn", ["run", "--out", "demo"], "data factory 'edgeslim.demo:digits_data' needs the module 'sklearn', "
                                          "which is not installed here: pip install 'edgeslim[demo]'"),
]


@pytest.mark.parametrize("module, args, fragment", EXTRA_CASES, ids=[f"{m}-{a[0]}" for m, a, _ in EXTRA_CASES])
def test_a_missing_optional_extra_is_one_sentence_and_exit_2(tmp_path, module, args, fragment):
    done = subprocess.run([sys.executable, "-c", WITHOUT.format(module=module, args=args)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "EDGESLIM_HISTORY": "off"})
    assert done.returncode == 2, (done.returncode, done.stderr)
    (line,) = done.stderr.splitlines()
    assert line.startswith("edgeslim: error: ") and fragment in line, line
    assert "Traceback" not in done.stderr + done.stdout


def test_a_module_missing_inside_edgeslim_itself_is_still_a_bug(tmp_path, monkeypatch):
    """Only the modules of edgeslim's extras are the user's to install; another missing module is exit 3."""
    def broken(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'edgeslim.gone'", name="edgeslim.gone")

    monkeypatch.setattr("edgeslim.build.build_job", broken)
    result = invoke("export", *BUILD[:-1], tmp_path / "b")
    assert_one_line(result, "internal error: ModuleNotFoundError", code=3, kind="internal error")
