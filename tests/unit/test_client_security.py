"""One set of security settings for both client libraries: mTLS, SCRAM and OAUTHBEARER map to the
same sign-in in aiokafka (and Faust) and in librdkafka."""

import asyncio
import base64
import json
import ssl
from pathlib import Path

import faust
import pytest
from pydantic import SecretStr, ValidationError

from agents.app import broker_credentials
from streams.kafka.client_security import (
    ClientSecurityError,
    aiokafka_security,
    oauth_token,
    rdkafka_security,
    token_claims,
    unsecured_jwt,
)
from streams.settings import Settings
from tests.tls_files import TestCA


def test_an_unsecured_jwt_is_what_kafkas_unsecured_validator_reads() -> None:
    token = unsecured_jwt("alice", now=1_700_000_000, lifetime=600)
    header, _, signature = token.split(".")
    assert signature == "" and json.loads(base64.urlsafe_b64decode(header + "==")) == {"alg": "none"}
    assert token_claims(token) == {"sub": "alice", "iat": 1_700_000_000, "exp": 1_700_000_600}


def test_a_token_file_is_read_at_each_login_and_its_expiry_taken_from_the_token(tmp_path: Path) -> None:
    file = tmp_path / "token"
    settings = Settings(sasl_mechanism="OAUTHBEARER", sasl_oauthbearer_token_file=file)
    file.write_text(unsecured_jwt("svc", now=100, lifetime=50) + "\n")
    assert oauth_token(settings, clock=lambda: 120) == (unsecured_jwt("svc", now=100, lifetime=50), 150.0)
    file.write_text("opaque-token")  # not a JWT: read again after a while
    assert oauth_token(settings, clock=lambda: 120) == ("opaque-token", 420.0)
    file.unlink()
    with pytest.raises(ClientSecurityError, match="LLMOPS_SASL_OAUTHBEARER_TOKEN_FILE"):
        oauth_token(settings)


def test_oauthbearer_needs_exactly_one_token_source() -> None:
    with pytest.raises(ValidationError, match="LLMOPS_SASL_OAUTHBEARER_TOKEN_FILE"):
        Settings(sasl_mechanism="OAUTHBEARER")
    with pytest.raises(ValidationError, match="LLMOPS_SSL_CERTFILE"):
        Settings(ssl_keyfile=Path("key.pem"))


def test_oauthbearer_for_both_libraries_and_faust(tmp_path: Path) -> None:
    settings = Settings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="OAUTHBEARER", sasl_oauthbearer_sub="bob")
    aio = aiokafka_security(settings)
    assert aio["sasl_mechanism"] == "OAUTHBEARER"
    token = asyncio.run(aio["sasl_oauth_token_provider"].token())  # type: ignore[attr-defined]
    assert token_claims(token)["sub"] == "bob"
    rd = rdkafka_security(settings)
    assert rd["sasl.mechanism"] == "OAUTHBEARER" and rd["enable.sasl.oauthbearer.unsecure.jwt"] is True
    assert rd["sasl.oauthbearer.config"] == "principal=bob"
    assert isinstance(broker_credentials(settings), faust.OAuthCredentials)

    file = tmp_path / "token"
    file.write_text(unsecured_jwt("carol", now=0, lifetime=10**10))
    from_file = rdkafka_security(
        settings.model_copy(update={"sasl_oauthbearer_sub": None, "sasl_oauthbearer_token_file": file})
    )
    token, expiry, principal = from_file["oauth_cb"]("")
    assert (token_claims(token)["sub"], expiry, principal) == ("carol", 10.0**10, "carol")


def test_mutual_tls_for_both_libraries_and_faust(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    client = ca.issue("llmops-client", key_password=b"k3y")
    settings = Settings(
        security_protocol="SSL",
        ssl_cafile=ca.pem,
        ssl_certfile=client.cert,
        ssl_keyfile=client.key,
        ssl_key_password=SecretStr("k3y"),
    )
    context = aiokafka_security(settings)["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    rd = rdkafka_security(settings)
    assert (rd["ssl.ca.location"], rd["ssl.certificate.location"], rd["ssl.key.location"]) == (
        str(ca.pem),
        str(client.cert),
        str(client.key),
    )
    assert rd["ssl.key.password"] == "k3y"
    assert isinstance(broker_credentials(settings), faust.SSLCredentials)
    with pytest.raises(ClientSecurityError, match="LLMOPS_SSL_KEY_PASSWORD") as raised:
        aiokafka_security(settings.model_copy(update={"ssl_key_password": SecretStr("wrong")}))
    assert "wrong" not in str(raised.value)


def test_scram_over_tls_keeps_its_mapping() -> None:
    settings = Settings(
        security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512", sasl_username="u", sasl_password="p"
    )
    assert rdkafka_security(settings) == {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "u",
        "sasl.password": "p",
    }
    assert aiokafka_security(settings)["sasl_plain_password"] == "p"
