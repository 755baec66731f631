"""Settings from LLMOPS_* variables, and logs that never show secrets."""

import json
import logging
from pathlib import Path

import pytest
import structlog
from pydantic import ValidationError

from streams.kafka.topics import Topics
from streams.logs import configure_logging, get_logger
from streams.settings import Settings


def test_environment_variables_configure_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOPS_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    monkeypatch.setenv("LLMOPS_NAMESPACE", "replay-1")
    monkeypatch.setenv("LLMOPS_REDACT_PII", '["email"]')
    settings = Settings()
    assert (settings.bootstrap_servers, settings.namespace, settings.redact_pii) == (
        "127.0.0.1:19092",
        "replay-1",
        ("email",),
    )
    assert Topics(settings.namespace).docs_raw == "replay-1.docs.raw"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"namespace": "Bad Name"},
        {"redact_pii": ("email", "ssn")},
        {"chunk_tokens": 32, "chunk_overlap": 30},
        {"unknown_option": 1},
    ],
)
def test_invalid_settings_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValidationError):
        Settings(**kwargs)


def test_topics_are_created_with_explicit_partitions_and_a_compacted_control_topic() -> None:
    specs = {s.name: s for s in Topics("ns").specs(partitions=6, replication_factor=1)}
    assert specs["ns.docs.raw"].partitions == 6
    assert specs["ns.models.control"].config["cleanup.policy"] == "compact"


def test_secrets_never_reach_the_log(capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(sasl_password="hunter2-secret", log_format="json", sasl_mechanism="PLAIN", sasl_username="svc")
    configure_logging(settings)
    try:
        get_logger("test").warning(
            "connecting", settings=repr(settings), sasl_password="hunter2-secret", api_token="tok-123456"
        )
        logging.getLogger("aiokafka").warning("stdlib logger goes through the same renderer")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert len(lines) == 2
    text = json.dumps(lines)
    assert "hunter2" not in text and "tok-123456" not in text
    assert lines[0]["sasl_password"] == "**********" and lines[0]["level"] == "warning"
    assert lines[1]["logger"] == "aiokafka"


def test_settings_survive_the_trip_through_a_child_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings(
        namespace="child", partitions=4, redact_pii=("email", "ip"), sasl_password="pw", near_dup_enabled=False
    )
    for name, value in original.to_env().items():
        monkeypatch.setenv(name, value)
    assert Settings() == original


def test_grpc_errors_for_unimplemented_rpcs_are_dropped_and_others_kept(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Settings(log_format="json"))
    grpc_server = logging.getLogger("grpc._server")
    try:
        for error in (NotImplementedError("Method not implemented!"), RuntimeError("disk full")):
            try:
                raise error
            except (NotImplementedError, RuntimeError):
                grpc_server.exception("Exception calling application: %s", error)
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert [line["event"] for line in lines] == ["Exception calling application: disk full"]
    assert "RuntimeError" in lines[0]["exception"]


def test_the_operations_guide_documents_every_setting() -> None:
    guide = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    undocumented = [
        f"LLMOPS_{name.upper()}"
        for name, field in Settings.model_fields.items()
        if field.validation_alias is None and f"`LLMOPS_{name.upper()}`" not in guide
    ]
    assert undocumented == [], f"add these to the configuration table of docs/operations.md: {undocumented}"
