"""The embedded broker's SASL/TLS properties follow the client settings."""

from pathlib import Path

import pytest
from pydantic import SecretStr

from streams.broker_security import BrokerSecurity, BrokerSecurityError
from streams.settings import Settings


def test_plaintext_settings_need_no_broker_security() -> None:
    assert BrokerSecurity.from_settings(Settings()) is None


def test_scram_settings_make_a_sasl_listener_and_create_the_user_at_format_time(tmp_path: Path) -> None:
    settings = Settings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password=SecretStr("pw"),
    )
    security = BrokerSecurity.from_settings(settings)
    assert security is not None
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
