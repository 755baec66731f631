"""SASL/SCRAM-SHA-512, plain and over TLS, on a broker of the test's own: every client (admin,
producers, consumers, the Faust worker) authenticates through settings, a wrong password fails
with a clear message, and no log line ever holds the password."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from streams.kafka.admin import offsets
from streams.kafka.broker import EmbeddedKafka
from streams.kafka.progress import wait_until_consumed
from streams.kafka.security import BrokerSecurity
from streams.kafka.topics import Topics
from streams.settings import Settings

from ..conftest import ROOT, WorkerProcess, run, run_cli
from .helpers import account_raw, fault_port, fresh, publish, records_of, report, unique_documents


@pytest.fixture(params=["SASL_PLAINTEXT", "SASL_SSL"])
def secured(
    request: pytest.FixtureRequest, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """Settings for a SCRAM-SHA-512 broker (port ``LLMOPS_TEST_KAFKA_PORT - 10``) and that broker.

    Every command run to make it (storage format, keytool) and the broker's own command line, as
    ``ps`` shows it (``/proc/<pid>/cmdline``), are checked for the SCRAM and keystore passwords.
    """
    port = fault_port(10)
    secured = settings.model_copy(
        update={
            "bootstrap_servers": f"127.0.0.1:{port}",
            "security_protocol": request.param,
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "llmops-test",
            "sasl_password": SecretStr("pw-" + secrets.token_urlsafe(18)),
            "ssl_cafile": tmp_path / "tls" / "ca.pem",
        }
    )
    broker = EmbeddedKafka(
        ROOT / ".llmops" / "kafka", port=port, heap="256m", security=BrokerSecurity.from_settings(secured)
    )
    shutil.rmtree(broker.home / f"tls-{port}", ignore_errors=True)
    commands: list[list[str]] = []
    real_run = subprocess.run

    def recording_run(command: list[str], **kwargs: Any) -> Any:
        commands.append([str(part) for part in command])
        return real_run(command, **kwargs)

    monkeypatch.setattr(subprocess, "run", recording_run)
    with fresh(broker):
        monkeypatch.setattr(subprocess, "run", real_run)
        pid = int(broker.pid_file.read_text())
        command_lines = [Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0"), *commands]
        password = secured.sasl_password.get_secret_value() if secured.sasl_password else "?"
        store_file = broker.home / f"tls-{port}" / "pass"
        secrets_here = [password, *([store_file.read_text()] if store_file.exists() else [])]
        assert any("StorageTool" in " ".join(c) or c[-1].startswith("@") for c in commands), commands
        leaked = [c for c in command_lines if any(s in part for part in c for s in secrets_here)]
        assert leaked == [], "a password reached a command line (visible in ps)"
        report(f"{request.param} command lines", checked=len(command_lines), passwords_on_command_lines=0)
        yield secured


def test_scram_clients_work_wrong_passwords_fail_clearly_and_secrets_stay_out_of_logs(secured: Settings) -> None:
    password = secured.sasl_password.get_secret_value() if secured.sasl_password else ""
    topics = Topics(secured.namespace)
    worker = WorkerProcess(secured, agents="ingest").start()
    try:
        records = records_of(unique_documents(30, offset=900))
        publish(secured, records)
        _, end = run(offsets(secured, [topics.docs_raw]))
        consumed = run(wait_until_consumed(secured, topics.app_id("ingest"), end, 180.0, alive=worker.alive))
        assert consumed, worker.log_tail()
    finally:
        assert worker.stop() == 0, worker.log_tail()
    summary = account_raw(secured)
    assert summary["accounted"] and summary["published"] == 30, summary

    status = run_cli(secured, "kafka", "topics", "--json", timeout=120)
    assert status.returncode == 0, status.stderr

    wrong = secured.model_copy(update={"sasl_password": SecretStr("not-the-" + secrets.token_urlsafe(8))})
    refused = run_cli(wrong, "kafka", "topics", timeout=120)
    assert refused.returncode != 0
    assert "refused the credentials of user 'llmops-test'" in refused.stderr, refused.stderr
    refused_worker = run_cli(wrong, "worker", "--agents", "ingest", timeout=120)
    assert refused_worker.returncode != 0
    assert "LLMOPS_SASL_PASSWORD" in refused_worker.stderr, refused_worker.stderr[-2000:]

    logs = worker.log.read_text(errors="replace") + status.stdout + status.stderr
    wrong_password = wrong.sasl_password.get_secret_value() if wrong.sasl_password else ""
    outputs = refused.stdout + refused.stderr + refused_worker.stdout + refused_worker.stderr
    assert password not in logs and wrong_password not in outputs
    report(
        f"{secured.security_protocol} with SCRAM-SHA-512",
        documents=30,
        accounted=summary["accounted"],
        wrong_password_message=refused.stderr.strip().splitlines()[-1],
        worker_log_lines=len(worker.log.read_text().splitlines()),
        password_in_logs=False,
    )
