"""``--command-config``: Java and librdkafka client.properties files become our settings; a key we
cannot use is an error that names it (never its value)."""

from pathlib import Path

import pytest

from streams.kafka.client_properties import PropertiesError, parse_properties, settings_from_properties
from streams.settings import Settings
from tests.tls_files import TestCA

SECRET = "s3cr3t-Pa55=w;rd"


def test_the_java_properties_format() -> None:
    text = (
        "# a comment\n"
        "! another\n"
        "  bootstrap.servers = b1:9092,\\\n"
        "      b2:9092\n"
        "security.protocol:SASL_SSL\n"
        "client.id llmops\n"
        "empty=\n"
        "path=C:\\\\kafka\\\\ca.pem\n"
        "unicode=caf\\u00e9\n"
    )
    assert parse_properties(text) == {
        "bootstrap.servers": "b1:9092,b2:9092",
        "security.protocol": "SASL_SSL",
        "client.id": "llmops",
        "empty": "",
        "path": "C:\\kafka\\ca.pem",
        "unicode": "café",
    }


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "client.properties"
    path.write_text(text)
    return path


def test_a_kafka_console_producer_scram_file(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    path = write(
        tmp_path,
        "bootstrap.servers=kafka:9093\n"
        "security.protocol=SASL_SSL\n"
        "sasl.mechanism=SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n"
        f'    username="alice" password="{SECRET}";\n'
        f"ssl.truststore.location={ca.pem}\n"
        "ssl.truststore.type=PEM\n"
        "client.id=console-producer\n",
    )
    overrides, ignored = settings_from_properties(path, tmp_path / "cache")
    settings = Settings(**overrides)
    assert settings.bootstrap_servers == "kafka:9093" and settings.security_protocol == "SASL_SSL"
    assert (settings.sasl_mechanism, settings.sasl_username) == ("SCRAM-SHA-512", "alice")
    assert settings.sasl_password is not None and settings.sasl_password.get_secret_value() == SECRET
    assert settings.ssl_cafile == ca.pem
    assert ignored == ["client.id", "ssl.truststore.type"]
    assert SECRET not in repr(settings)


def test_a_pkcs12_trust_store_becomes_a_pem_ca_file(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    store = ca.truststore_p12(b"changeit")
    path = write(
        tmp_path,
        f"security.protocol=SSL\nssl.truststore.location={store}\nssl.truststore.type=PKCS12\n"
        "ssl.truststore.password=changeit\n",
    )
    overrides, _ = settings_from_properties(path, tmp_path / "cache")
    assert overrides["ssl_cafile"].read_text() == ca.pem.read_text()
    wrong = write(
        tmp_path, f"ssl.truststore.location={store}\nssl.truststore.type=PKCS12\nssl.truststore.password=no\n"
    )
    with pytest.raises(PropertiesError, match=r"ssl\.truststore\.password"):
        settings_from_properties(wrong, tmp_path / "cache")


def test_a_kcat_file_with_mtls_and_an_encrypted_key(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    client = ca.issue("llmops-client", key_password=SECRET.encode())
    path = write(
        tmp_path,
        "security.protocol=ssl\n"
        f"ssl.ca.location={ca.pem}\nssl.certificate.location={client.cert}\nssl.key.location={client.key}\n"
        f"ssl.key.password={SECRET}\n",
    )
    settings = Settings(**settings_from_properties(path, tmp_path)[0])
    assert settings.security_protocol == "SSL"
    assert (settings.ssl_cafile, settings.ssl_certfile, settings.ssl_keyfile) == (ca.pem, client.cert, client.key)
    assert settings.ssl_key_password is not None and settings.ssl_key_password.get_secret_value() == SECRET


def test_a_java_pem_keystore_holds_key_and_chain_in_one_file(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    client = ca.issue("llmops-client")
    bundle = tmp_path / "client-bundle.pem"
    bundle.write_text(client.key.read_text() + client.cert.read_text())
    path = write(tmp_path, f"security.protocol=SSL\nssl.keystore.type=PEM\nssl.keystore.location={bundle}\n")
    overrides, _ = settings_from_properties(path, tmp_path)
    assert overrides["ssl_certfile"] == bundle and "ssl_keyfile" not in overrides


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "sasl.mechanism=OAUTHBEARER\nsasl.jaas.config=org.apache.kafka.common.security.oauthbearer."
            'OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="alice";\n',
            {"sasl_mechanism": "OAUTHBEARER", "sasl_oauthbearer_sub": "alice"},
        ),
        (
            "sasl.mechanisms=OAUTHBEARER\nenable.sasl.oauthbearer.unsecure.jwt=true\n"
            "sasl.oauthbearer.config=principal=alice scope=x\n",
            {"sasl_mechanism": "OAUTHBEARER", "sasl_oauthbearer_sub": "alice"},
        ),
        (
            f"sasl.mechanisms=PLAIN\nsasl.username=bob\nsasl.password={SECRET}\n",
            {"sasl_mechanism": "PLAIN", "sasl_username": "bob"},
        ),
    ],
)
def test_oauthbearer_and_librdkafka_sasl_keys(tmp_path: Path, text: str, expected: dict[str, str]) -> None:
    overrides, _ = settings_from_properties(write(tmp_path, text), tmp_path)
    assert {key: value for key, value in overrides.items() if key != "sasl_password"} == expected


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (f"sasl.kerberos.service.name=kafka\nsasl.mechanism=GSSAPI\nsasl.password={SECRET}\n", "sasl_mechanism"),
        (f"bogus.key={SECRET}\n", "bogus.key"),
        ("sasl.jaas.config=com.example.Login required;\n", "sasl.jaas.config"),
        (
            f'sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required password="{SECRET}";\n',
            "username",
        ),
        ("ssl.truststore.location=/no/such/file.jks\n", "ssl.truststore.location"),
        ("ssl.keystore.location=/etc/hostname\nssl.keystore.type=JKS\n", "ssl.keystore.type=PEM"),
        (
            "sasl.mechanism=SCRAM-SHA-1\nsasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule "
            f'required username="a" password="{SECRET}";\n',
            "SCRAM-SHA-512",
        ),
    ],
)
def test_what_cannot_be_used_is_named_never_its_value(tmp_path: Path, text: str, named: str) -> None:
    path = write(tmp_path, text)
    try:
        Settings(**settings_from_properties(path, tmp_path)[0])
    except PropertiesError as error:
        message = str(error)
    except ValueError as error:  # pydantic: a value the settings do not allow (named by field)
        message = str(error)
    else:
        pytest.fail("accepted")
    assert named in message and SECRET not in message, message
