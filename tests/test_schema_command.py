"""`edgeslim schema KIND` prints the JSON Schema that the committed schemas/ files hold."""
import json

import pytest

from helpers import REPO


@pytest.mark.parametrize("kind", ["recipe", "manifest", "report"])
def test_schema_prints_the_published_file(cli, kind):
    result = cli("schema", kind)
    assert result.exit_code == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed == json.loads((REPO / "schemas" / f"{kind}.schema.json").read_text())
    assert printed["$schema"].startswith("https://json-schema.org/draft/2020-12")


def test_an_unknown_schema_is_one_sentence(cli):
    result = cli("schema", "bundle")
    assert result.exit_code == 2
    assert result.stderr.startswith("edgeslim: error:") and result.stderr.count("\n") == 1
