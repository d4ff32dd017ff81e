"""The report's run record: digests that change with the data, the commit of the model's source."""
import json
import subprocess

import numpy as np
import pytest
from tiny import tiny_report

from edgeslim.core.errors import ConfigError
from edgeslim.report.provenance import data_digest, git_commit, run_info, source_folder
from edgeslim.report.schema import read_report
from helpers import REPO, ZOO


def test_the_data_digest_follows_every_byte_dtype_and_shape():
    x, y = np.arange(12, dtype=np.float32).reshape(3, 4), np.array([0, 1, 2])
    digest = data_digest([(x, y)])
    assert digest == data_digest([(x.copy(), y.copy())]) and len(digest) == 64
    changed = x.copy()
    changed[2, 3] += 1
    assert data_digest([(changed, y)]) != digest
    assert data_digest([(x.astype(np.float64), y)]) != digest
    assert data_digest([(x.reshape(4, 3), y)]) != digest
    assert data_digest([({"b": y, "a": x}, y)]) == data_digest([({"a": x, "b": y}, y)])  # inputs by name
    assert data_digest([]) is None


def test_the_commit_is_the_model_sources():
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert source_folder(f"{ZOO}:small_cnn") == ZOO.parent.resolve()
    commit, dirty = git_commit(ZOO.parent)
    assert commit == head and isinstance(dirty, bool)
    info = run_info("validate", model=f"{ZOO}:small_cnn", data="zoo.py:digits", data_sha256="d" * 64)
    assert info["commit"] == head and info["command"] == "validate" and info["model"] == f"{ZOO}:small_cnn"
    assert info["created"].endswith("+00:00") and info["id"].startswith(info["created"][:4])


def test_outside_a_repository_there_is_no_commit(tmp_path):
    assert git_commit(tmp_path) == (None, None)


def test_reports_with_and_without_a_run_record_load(tmp_path):
    old = tiny_report()   # as edgeslim wrote reports before the run record
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert "run" not in read_report(tmp_path / "old.json")
    new = dict(tiny_report(), run=run_info("run", model="zoo.py:small_cnn"))
    (tmp_path / "new.json").write_text(json.dumps(new))
    assert read_report(tmp_path / "new.json")["run"]["model"] == "zoo.py:small_cnn"
    new["run"]["commit_dirty"] = "yes"
    (tmp_path / "bad.json").write_text(json.dumps(new))
    with pytest.raises(ConfigError, match="run.commit_dirty"):
        read_report(tmp_path / "bad.json")
