"""Helpers shared by the tests (importable as `helpers`; pytest puts tests/ on the path)."""
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ZOO = Path(__file__).parent / "fixtures" / "zoo.py"
# Each architecture: factory name, training epochs, learning rate.
ARCHITECTURES = {"cnn": ("small_cnn", 6, 3e-3), "mobilenet": ("mobilenet", 8, 5e-3),
                 "transformer": ("transformer", 10, 3e-3)}


def spec(name: str) -> str:
    return f"{ZOO}:{name}"


def run_edgeslim(*args, env=None, timeout=300):
    """`edgeslim` in a child process, as a user's shell or CI would run it."""
    return subprocess.run([sys.executable, "-m", "edgeslim", *[str(a) for a in args]],
                          capture_output=True, text=True, env=env, timeout=timeout)


def int8_weight_extent(bundle: Path) -> int:
    """The largest |value| among a bundle's int8 weight tensors (64 at most with 7-bit weights)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    arrays = [numpy_helper.to_array(t) for t in onnx.load(Path(bundle) / "model.onnx").graph.initializer]
    return max(int(np.abs(a.astype(np.int32)).max()) for a in arrays if a.dtype == np.int8 and a.ndim >= 2)


# Metrics that break (tests/fixtures/zoo.py), with what the one sentence must say about each.
BAD_METRICS = [("raising_metric", "raised KeyError: 'class 11 has no name'"),
               ("text_metric", "returned 'ninety percent' (type str), which is not a finite number"),
               ("nan_metric", "returned nan (type float), which is not a finite number")]


def assert_one_sentence(result, fragment: str, code: int = 2, kind: str = "error") -> str:
    """The CLI failed with `code` and one line `edgeslim: <kind>: ...` holding `fragment`, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"edgeslim: {kind}: "), lines[0]
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


def copy_checkout(destination: Path) -> Path:
    """The tracked files of the checkout (what a branch holds), without the venv or build outputs."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.split()
    for name in listed:
        if (REPO / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, destination / name)
    return destination


def wait_for_text(path: Path, text: str, timeout: float) -> None:
    """Wait until a child process's log at `path` holds `text` (polling every 0.1 s); fail the test after `timeout`."""
    import time

    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        assert time.monotonic() < deadline, f"{text!r} never appeared: {path.read_text()[-2000:]}"
        time.sleep(0.1)
