"""The CLI as a subprocess against the real broker, the way Kafka users and scripts call it:
``-b`` wins over ``LLMOPS_BOOTSTRAP_SERVERS``, ``--json`` output parses, ``llmops publish -`` reads
JSONL from stdin (bad lines named by number, the rest published), and exit codes say what happened."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from streams.kafka.admin import read_topic
from streams.kafka.topics import ALL_BASE_NAMES, Topics
from streams.settings import Settings

from .conftest import ROOT, run

NOBODY = "127.0.0.1:1"  # nothing listens here: only -b can make a command reach the broker


def llmops(settings: Settings, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`llmops ARGS` with LLMOPS_BOOTSTRAP_SERVERS pointing nowhere."""
    env = {**os.environ, **settings.to_env(), "LLMOPS_BOOTSTRAP_SERVERS": NOBODY, "LLMOPS_LOG_FORMAT": "json"}
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=180,
        check=False,
    )


def test_bootstrap_flag_and_json_output(settings: Settings, kafka_bootstrap: str) -> None:
    topics = Topics(settings.namespace)
    without = llmops(settings, "kafka", "topics", "--json")
    assert without.returncode == 3, without.stderr[-2000:]  # not reachable at LLMOPS_BOOTSTRAP_SERVERS
    assert NOBODY in without.stderr and without.stdout == ""

    created = llmops(settings, "kafka", "topics", "-b", kafka_bootstrap, "--json")
    assert created.returncode == 0, created.stderr[-2000:]
    listing = json.loads(created.stdout)
    names = {topics.name(base) for base in ALL_BASE_NAMES}
    assert set(listing["created"]) == names and set(listing["topics"]) == names
    again = json.loads(llmops(settings, "kafka", "topics", "--bootstrap-server", kafka_bootstrap, "--json").stdout)
    assert again["created"] == [] and again["topics"][topics.docs_raw] == {"partitions": 3, "records": 0}


def test_publish_reads_jsonl_from_stdin_and_names_bad_lines(settings: Settings, kafka_bootstrap: str) -> None:
    topics = Topics(settings.namespace)
    lines = [
        '{"id": "a", "text": "first document"}',
        "not json at all",
        '{"id": "b", "text": "second document"}',
        "",
        '["an", "array"]',
        '{"id": "c", "text": "third document"}',
    ]
    result = llmops(settings, "publish", "-", "-b", kafka_bootstrap, "--json", stdin="\n".join(lines) + "\n")
    assert result.returncode == 1, result.stderr[-2000:]  # published, but some lines were skipped
    report = json.loads(result.stdout)
    assert report["topic"] == topics.docs_raw and report["records"] == 3
    assert [(s["line"], s["error"].split(" (")[0]) for s in report["skipped"]] == [
        (2, "not JSON"),
        (5, "a JSON list, not an object"),
    ]
    assert "stdin: line 2: not JSON" in result.stderr and "stdin: line 5:" in result.stderr

    async def keys() -> list[bytes | None]:
        return [record.key async for record in read_topic(settings, topics.docs_raw)]

    assert sorted(key or b"" for key in run(keys())) == [b"a", b"b", b"c"]

    clean = llmops(settings, "publish", "-", "-b", kafka_bootstrap, stdin='{"id": "d", "text": "x"}\n')
    assert clean.returncode == 0 and "published 1 records" in clean.stdout, clean.stderr[-2000:]
