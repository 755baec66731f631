"""ACLs over TLS: SASL_SSL (SCRAM-SHA-512) on the embedded broker with the StandardAuthorizer on.

The broker makes its own certificate (PEM where LLMOPS_SSL_CAFILE points). Granted principals (a
publisher and an ingest worker) do their work over TLS; a principal with no grant, and a granted
one writing a topic that is not its own, are refused in one line; a wrong password and a client
that does not trust the broker's certificate fail with messages that say what to check; no output
holds a password.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from streams.kafka.acls import apply_grants, role_grants, worker_grants
from streams.kafka.admin import ensure_topics
from streams.kafka.topics import Topics
from streams.settings import Settings

from ..conftest import run, run_cli
from .helpers import broker_with_acls, passwords_of, publish_and_ingest, refusal, refused_write, report

USERS = ("llmops-ingest", "llmops-publisher", "llmops-embed")  # llmops-embed gets no grant here
DOCUMENTS = 20


@pytest.fixture
def tls_cluster_with_acls(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, dict[str, Settings]]]:
    with broker_with_acls(settings, USERS, "SASL_SSL", tmp_path / "tls" / "ca.pem") as cluster:
        yield cluster


def test_granted_clients_work_over_tls_and_the_rest_are_refused_clearly(
    tls_cluster_with_acls: tuple[Settings, dict[str, Settings]],
) -> None:
    admin, users = tls_cluster_with_acls
    ingest, publisher, ungranted = (users[user] for user in USERS)
    topics = Topics(admin.namespace)
    assert admin.ssl_cafile is not None and admin.ssl_cafile.read_text().startswith("-----BEGIN CERTIFICATE-----")
    run(ensure_topics(admin))
    grants = worker_grants(admin.namespace, ["ingest"], "llmops-ingest")
    grants += role_grants(admin.namespace, "publisher", "llmops-publisher")
    assert run(apply_grants(admin, grants)) == len(grants)

    summary, ingest_output, code = publish_and_ingest(admin, publisher, ingest, DOCUMENTS)

    # A principal with no grant at all: its producer may not even start (it may write no topic).
    no_grant, no_grant_output = refusal(ungranted, "publish", "--corpus", "stdlib", "--limit", "2")
    assert "a cluster operation" in no_grant, no_grant
    # A granted principal outside its grants: refused, naming the topic.
    other_topic, other_output = refused_write(publisher, topics.docs_clean)

    wrong = publisher.model_copy(update={"sasl_password": SecretStr("not-the-" + secrets.token_urlsafe(8))})
    refused_login = run_cli(wrong, "kafka", "topics", timeout=180)
    assert refused_login.returncode != 0
    login_line = refused_login.stderr.strip().splitlines()[-1]
    assert "refused the credentials of user 'llmops-publisher'" in login_line, refused_login.stderr[-2000:]
    untrusting = publisher.model_copy(update={"ssl_cafile": None})  # the system CAs never signed this broker
    untrusted = run_cli(untrusting, "kafka", "topics", timeout=180)
    assert untrusted.returncode != 0
    tls_line = untrusted.stderr.strip().splitlines()[-1]
    assert "TLS handshake" in tls_line and "LLMOPS_SSL_CAFILE" in tls_line, untrusted.stderr[-2000:]

    outputs = [ingest_output, no_grant_output, other_output]
    outputs += [refused_login.stdout, refused_login.stderr, untrusted.stdout, untrusted.stderr]
    secrets_seen = [p for p in passwords_of(admin, wrong, *users.values()) if any(p in text for text in outputs)]
    assert not secrets_seen, "a password was printed or logged"
    report(
        "ACLs over TLS (SASL_SSL, SCRAM-SHA-512, StandardAuthorizer)",
        grants_applied=len(grants),
        documents=DOCUMENTS,
        accounted=summary["accounted"],
        refused_without_grants=no_grant,
        refused_other_topic=other_topic,
        wrong_password_message=login_line,
        untrusted_certificate_message=tls_line,
        worker_exit_code=code,
    )
