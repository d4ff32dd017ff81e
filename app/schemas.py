"""JSON Schemas (draft 2020-12) of the documents users write and read: a recipe, a bundle's
manifest, a report. Each is generated from the typed dataclasses that read the document (see
edgeslim.core.documents), so a schema and the reader it describes cannot drift apart.

    schema_for("recipe")                      # a dict; the recipe's steps: a oneOf over the step configs
    python -m edgeslim.schemas schemas/       # rewrite the files kept under schemas/ in the repository

Editors validate a recipe with `# yaml-language-server: $schema=path/to/recipe.schema.json`.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from edgeslim.core.errors import ConfigError

KINDS = ("recipe", "manifest", "report", "history")


def schema_for(kind: str) -> dict:
    """The JSON Schema of one kind of document: recipe, manifest, report or history record."""
    if kind == "recipe":
        from edgeslim.recipe import recipe_schema

        return recipe_schema()
    if kind == "manifest":
        from edgeslim.sdk.manifest import manifest_schema

        return manifest_schema()
    if kind == "report":
        from edgeslim.report.schema import report_schema

        return report_schema()
    if kind == "history":
        from edgeslim.history import history_schema

        return history_schema()
    raise ConfigError(f"there is no schema {kind!r}; the schemas are {', '.join(KINDS)}")


def schema_text(kind: str) -> str:
    """The schema as the files under schemas/ hold it: indented JSON, one newline at the end."""
    return json.dumps(schema_for(kind), indent=2, ensure_ascii=False) + "\n"


def write_schemas(folder: str | Path) -> list[Path]:
    """Write <kind>.schema.json for every kind into `folder`."""
    from edgeslim.core.outputs import write_text

    paths = [Path(folder) / f"{kind}.schema.json" for kind in KINDS]
    for kind, path in zip(KINDS, paths):
        write_text(path, schema_text(kind))
    return paths


if __name__ == "__main__":
    for written in write_schemas(sys.argv[1] if len(sys.argv) > 1 else "schemas"):
        print(f"wrote {written}")
