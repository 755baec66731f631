"""The embedded broker's SASL/TLS properties follow the client settings."""

from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import SecretStr

from streams.kafka.security import BrokerSecurity, BrokerSecurityError
from streams.settings import Settings


def scram_security(username: str, **extra: object) -> BrokerSecurity:
    """The broker side of SCRAM-SHA-512 client settings for ``username`` (password ``pw``)."""
    settings = Settings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username=username,
        sasl_password=SecretStr("pw"),
        **extra,
    )
    security = BrokerSecurity.from_settings(settings)
    assert security is not None
    return security


def test_plaintext_settings_need_no_broker_security() -> None:
    assert BrokerSecurity.from_settings(Settings()) is None


def test_scram_settings_make_a_sasl_listener_and_create_the_user_at_format_time(tmp_path: Path) -> None:
    security = scram_security("svc")
    props = security.properties("SASL_PLAINTEXT", tmp_path)
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512" and props["super.users"] == "User:svc"
    assert 'username="svc"' in props["listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config"]
    assert security.format_arguments() == ["--add-scram", "SCRAM-SHA-512=[name=svc,password=pw]"]
    assert "pw" not in repr(security), "the password is a SecretStr"


@pytest.mark.parametrize(
    "changes",
    [
        {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "p"},
        {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256"},
        {"security_protocol": "SSL"},
    ],
)
def test_what_the_embedded_broker_cannot_do_is_said_up_front(changes: dict[str, object]) -> None:
    with pytest.raises(BrokerSecurityError):
        BrokerSecurity.from_settings(Settings(**changes))


def test_acls_turn_the_authorizer_on_and_secure_the_controller_listener_with_the_super_user(tmp_path: Path) -> None:
    security = scram_security("admin", kafka_authorizer=True)
    props = security.properties("SASL_PLAINTEXT", tmp_path)
    assert props["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert props["super.users"] == "User:admin" and props["allow.everyone.if.no.acl.found"] == "false"
    assert props["listener.security.protocol.map"] == "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
    assert 'user_admin="pw"' in props["listener.name.controller.plain.sasl.jaas.config"]
    with_users = replace(security, users=(("svc", SecretStr("s")),))
    assert with_users.format_arguments()[-2:] == ["--add-scram", "SCRAM-SHA-512=[name=svc,password=s]"]


def test_acls_without_sasl_are_refused_up_front() -> None:
    settings = Settings(security_protocol="SSL", ssl_cafile=Path("ca.pem"), kafka_authorizer=True)
    with pytest.raises(BrokerSecurityError, match="need SASL"):
        BrokerSecurity.from_settings(settings)


def test_oauthbearer_settings_make_an_unsecured_jwt_listener_with_no_scram_users(tmp_path: Path) -> None:
    settings = Settings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="OAUTHBEARER", sasl_oauthbearer_sub="admin")
    security = BrokerSecurity.from_settings(settings)
    assert security is not None and security.format_arguments() == []
    props = security.properties("SASL_PLAINTEXT", tmp_path)
    assert props["sasl.enabled.mechanisms"] == "OAUTHBEARER" and props["super.users"] == "User:admin"
    jaas = props["listener.name.sasl_plaintext.oauthbearer.sasl.jaas.config"]
    assert jaas.startswith("org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required")
    assert 'unsecuredLoginStringClaim_sub="admin"' in jaas
    with pytest.raises(BrokerSecurityError, match="SASL/SCRAM"):
        BrokerSecurity.from_settings(settings.model_copy(update={"kafka_authorizer": True}))


def test_client_certificates_need_a_tls_listener() -> None:
    with pytest.raises(BrokerSecurityError, match="mutual TLS"):
        BrokerSecurity("SASL_PLAINTEXT", "SCRAM-SHA-512", "u", SecretStr("p"), client_ca_file=Path("ca.pem")).check()
