"""The folders are the layers: the import contract in pyproject.toml holds, and it catches an upward import.

lint-imports reads the installed layout (edgeslim/core, edgeslim/sdk, ...), so each check installs a
wheel of the tree into a folder of its own and points the linter at it.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, copy_checkout

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_layers(tree: Path, work: Path) -> subprocess.CompletedProcess:
    wheels, site = work / "wheels", work / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheels,
                    tree], check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site,
                    *wheels.glob("edgeslim-*.whl")], check=True, capture_output=True)
    return subprocess.run([LINT_IMPORTS, "--config", tree / "pyproject.toml", "--no-cache"], cwd=work,
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(site)))


def test_the_import_contract_holds(tmp_path):
    # A copy, not the checkout: `pip wheel` reuses a build/ folder, which may hold modules since deleted.
    done = _lint_layers(copy_checkout(tmp_path / "tree"), tmp_path / "work")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "1 kept, 0 broken" in done.stdout


@pytest.mark.parametrize("module, upward", [
    ("core/errors.py", "from edgeslim.compress import registry"),   # core reaching a stage
    ("sdk/model.py", "import edgeslim.export.graph"),               # the sdk reaching a stage
    ("export/graph.py", "from edgeslim.compress import prune"),     # one stage into another
    ("report/gates.py", "from edgeslim import build"),              # a stage reaching the application
])
def test_an_upward_import_breaks_the_contract(tmp_path, module, upward):
    tree = copy_checkout(tmp_path / "branch")
    target = tree / module
    target.write_text(target.read_text() + f"\n{upward}  # the branch's upward import\n")
    done = _lint_layers(tree, tmp_path / "work")
    assert done.returncode != 0
    assert "BROKEN" in done.stdout and upward.split()[1].split(".")[-1] in done.stdout


def test_the_checkout_does_not_shadow_the_installed_package():
    """From the repository root, `import edgeslim.sdk` finds the installed package: no path hacks."""
    done = subprocess.run([sys.executable, "-c", "import edgeslim.sdk; print(edgeslim.sdk.__file__)"],
                          cwd=REPO, capture_output=True, text=True, env={k: v for k, v in os.environ.items()
                                                                         if k not in ("PYTHONPATH", "PYTHONSAFEPATH")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(REPO / "sdk" / "__init__.py")   # the editable install maps it here
    assert not (REPO / "edgeslim").exists()
