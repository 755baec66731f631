"""The embedded broker's pure helpers."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from streams.kafka.broker import EmbeddedKafka, new_cluster_id
from streams.settings import Settings


def test_cluster_ids_are_16_bytes_and_never_look_like_an_option() -> None:
    ids = {new_cluster_id() for _ in range(5000)}
    assert len(ids) == 5000
    for cluster_id in ids:
        assert not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    # With 5000 draws a leading "-" would have shown up (p of missing it ~ (63/64)^5000) if not filtered;
    # other URL-safe characters still appear first, so the filter is narrow.
    assert any(cluster_id.startswith("_") for cluster_id in ids)


@pytest.mark.parametrize(("gc", "flag"), [("g1", "-XX:+UseG1GC"), ("zgc", "-XX:+UseZGC")])
def test_the_broker_runs_the_garbage_collector_its_settings_name(gc: str, flag: str, tmp_path: Path) -> None:
    broker = EmbeddedKafka.from_settings(Settings(kafka_gc=gc, data_dir=tmp_path, kafka_heap="256m"))
    command = broker._java("kafka.Kafka", "server.properties")
    assert [option for option in command if option.startswith("-XX:+Use")] == [flag]
    assert "-Xmx256m" in command and command[-2:] == ["kafka.Kafka", "server.properties"]
