"""Records written with an older schema (schemas/history/) still decode as the current record.

A schema that changes must keep its previous version in schemas/history/, or records already on
the topics (a registry on models.control, a drift reference, responses being replayed) become
unreadable after an upgrade: the embedded registry knows a schema only by its file.
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
from typing import Any

import fastavro
import pytest

from streams.kafka.avro import HEADER, MAGIC_BYTE, SCHEMA_DIR, AvroCodec, EmbeddedRegistry, embedded_schema_id

HISTORY = sorted((SCHEMA_DIR / "history").glob("*.avsc"))


def example(schema: Any, named: dict[str, Any]) -> Any:
    """A valid value of ``schema``: the first branch of a union, one of everything else."""
    if isinstance(schema, list):
        return example(schema[0], named)
    if isinstance(schema, str):
        simple = {"null": None, "string": "x", "int": 1, "long": 1, "double": 1.0, "float": 1.0}
        if schema in simple:
            return simple[schema]
        if schema == "boolean":
            return False
        if schema == "bytes":
            return b""
        return example(named[schema], named)
    kind = schema["type"]
    if kind == "record":
        named[schema["name"]] = schema
        return {f["name"]: example(f["type"], named) for f in schema["fields"]}
    if kind == "enum":
        named[schema["name"]] = schema
        return schema["symbols"][0]
    if kind == "array":
        return [example(schema["items"], named)]
    if kind == "map":
        return {"k": example(schema["values"], named)}
    return example(kind, named)


@pytest.mark.parametrize("path", HISTORY, ids=[p.name for p in HISTORY])
def test_a_record_written_with_an_older_schema_decodes_as_the_current_one(path: Path) -> None:
    old = json.loads(path.read_text())
    record = example(old, {})
    buffer = io.BytesIO()
    buffer.write(HEADER.pack(MAGIC_BYTE, embedded_schema_id(old)))
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(old), record)
    decoded = AvroCodec(EmbeddedRegistry.from_directory()).decode(buffer.getvalue(), old["name"])
    current = json.loads((SCHEMA_DIR / f"{old['name']}.avsc").read_text())
    assert set(decoded) == {f["name"] for f in current["fields"]}  # fields added since have defaults


def test_the_version_before_each_schema_change_is_kept_in_history() -> None:
    """For each current schema, its last committed version with another wire form is in history (git)."""
    known = {embedded_schema_id(json.loads(p.read_text())) for p in HISTORY}
    root = SCHEMA_DIR.parent
    for path in sorted(SCHEMA_DIR.glob("*.avsc")):
        relative = str(path.relative_to(root))
        try:
            commits = subprocess.run(
                ["git", "log", "--format=%H", "--", relative], cwd=root, capture_output=True, text=True, check=True
            ).stdout.split()
        except (OSError, subprocess.CalledProcessError):
            pytest.skip("not a git checkout: the history of the schema files is unknown")
        current = embedded_schema_id(json.loads(path.read_text()))
        for commit in commits:
            shown = subprocess.run(["git", "show", f"{commit}:{relative}"], cwd=root, capture_output=True, text=True)
            if shown.returncode != 0:
                continue
            previous = embedded_schema_id(json.loads(shown.stdout))
            if previous != current:  # docs-only edits keep the id (canonical form drops docs)
                assert previous in known, f"{path.name} as of {commit[:12]} is not in schemas/history/"
                break
