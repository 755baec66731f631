"""Secrets stay off command lines, out of reprs, logs and error messages, and off plain http."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import subprocess
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import SecretStr, ValidationError

from streams.inference.generator import GeneratorClient, GeneratorError
from streams.kafka import security as security_module
from streams.kafka.avro import ConfluentRegistry
from streams.kafka.broker import EmbeddedKafka
from streams.kafka.security import BrokerSecurity
from streams.logs import configure_logging, get_logger
from streams.settings import Settings
from tests.unit.loopback_http import loopback_server

MILVUS_PW, REGISTRY_PW, GENERATOR_PW = "milvusPW-81x", "regPW-22y", "genPW-33z"
SASL_PW, API_KEY = "saslPW-44q", "sk-K55w"


def with_url_credentials() -> Settings:
    return Settings(
        milvus_uri=f"http://svc:{MILVUS_PW}@milvus.internal:19530",
        schema_registry_url=f"http://reg:{REGISTRY_PW}@registry.internal:8081",
        generator_url=f"https://gen:{GENERATOR_PW}@llm.example.com/v1",
        generator_api_key=API_KEY,
        sasl_password=SASL_PW,
    )


def test_url_credentials_are_masked_in_the_settings_repr() -> None:
    settings = with_url_credentials()
    shown = repr(settings) + str(settings)
    for secret in (MILVUS_PW, REGISTRY_PW, GENERATOR_PW, SASL_PW, API_KEY):
        assert secret not in shown
    assert "http://**********@milvus.internal:19530" in shown
    assert settings.milvus_uri == f"http://svc:{MILVUS_PW}@milvus.internal:19530", "the value itself is intact"


def test_logs_mask_url_userinfo_in_any_string_and_known_secrets_by_value(capsys: pytest.CaptureFixture[str]) -> None:
    settings = with_url_credentials().model_copy(update={"log_format": "json"})
    configure_logging(settings)
    try:
        log = get_logger("test")
        log.info("connecting", target="http://other:elsewherePW9@db.internal/x", nested={"dsn": [settings.milvus_uri]})
        log.warning(f"the broker refused {SASL_PW} for user svc")  # a secret by value, under no telling key
        # A library's stdlib logger (pymilvus's own may be set to another level by earlier imports).
        logging.getLogger("some.library").warning("cannot reach %s", settings.milvus_uri)
        try:
            raise ConnectionError(f"failed for url {settings.schema_registry_url}")
        except ConnectionError:
            log.exception("registry down")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    text = capsys.readouterr().err
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert len(lines) == 4, text
    for secret in (MILVUS_PW, REGISTRY_PW, SASL_PW, "elsewherePW9"):
        assert secret not in text
    assert "http://**********@db.internal/x" in text and "ConnectionError" in lines[3]["exception"]


def test_a_bearer_key_is_refused_over_plain_http_to_another_host() -> None:
    with pytest.raises(ValidationError, match="https"):
        Settings(generator_url="http://llm.example.com/v1", generator_api_key=API_KEY)
    with pytest.raises(ValueError, match="https"):
        GeneratorClient("http://10.0.0.5:8000/v1", "m", API_KEY)
    for url in ("http://127.0.0.1:8080/v1", "http://localhost:8080", "http://[::1]:8080", "https://llm.example.com"):
        assert Settings(generator_url=url, generator_api_key=API_KEY).generator_url == url
        assert API_KEY not in repr(GeneratorClient(url, "m", API_KEY))
    assert Settings(generator_url="http://llm.example.com/v1").generator_api_key is None, "no key: nothing to leak"


class Recorder(BaseHTTPRequestHandler):
    """Answers 500 to everything and records the Authorization headers it saw."""

    seen: list[str] = []  # noqa: RUF012 - shared by the handler instances of one test server

    def do_POST(self) -> None:
        Recorder.seen.append(self.headers.get("Authorization", ""))
        self.send_response(500)
        self.end_headers()

    do_GET = do_POST

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def failing_server() -> Iterator[int]:
    Recorder.seen.clear()
    with loopback_server(Recorder) as port:
        yield port


def test_http_errors_of_the_generator_and_the_registry_never_show_url_credentials(failing_server: int) -> None:
    generator = GeneratorClient(f"http://gen:{GENERATOR_PW}@127.0.0.1:{failing_server}/v1", "m", API_KEY)
    with pytest.raises(GeneratorError) as failed:
        asyncio.run(generator.generate("q", "c"))
    assert "500" in str(failed.value) and GENERATOR_PW not in str(failed.value) and API_KEY not in str(failed.value)

    async def streamed() -> list[str]:
        return [delta async for delta in generator.stream("q", "c")]

    with pytest.raises(GeneratorError) as failed_stream:
        asyncio.run(streamed())
    shown = str(failed_stream.value)
    assert "500" in shown and GENERATOR_PW not in shown and API_KEY not in shown

    registry = ConfluentRegistry(f"http://reg:{REGISTRY_PW}@127.0.0.1:{failing_server}")
    with pytest.raises(Exception) as failed_registry:
        registry.schema_for(1)
    assert "500" in str(failed_registry.value) and REGISTRY_PW not in str(failed_registry.value)
    assert Recorder.seen[-1] == "Basic " + base64.b64encode(f"reg:{REGISTRY_PW}".encode()).decode()


def scram_over_tls(tmp_path: Path) -> BrokerSecurity:
    settings = Settings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password=SecretStr(SASL_PW),
        ssl_cafile=tmp_path / "ca.pem",
    )
    security = BrokerSecurity.from_settings(settings)
    assert security is not None
    return security


def test_the_storage_format_command_line_holds_no_scram_password(tmp_path: Path) -> None:
    security = scram_over_tls(tmp_path)
    broker = EmbeddedKafka(tmp_path / "kafka", port=1, security=security)
    argument_file = tmp_path / "format.args"
    command = broker.format_command(tmp_path / "server.properties", "cluster-id", argument_file)
    assert not any(SASL_PW in argument for argument in command), command
    assert command[-1] == f"@{argument_file}"
    assert SASL_PW in argument_file.read_text() and argument_file.stat().st_mode & 0o777 == 0o600


def test_keytool_gets_the_store_password_from_its_environment_not_argv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The certificate is really made (keytool runs); no argv it ran with holds the store password."""
    commands: list[list[str]] = []
    real_run = subprocess.run

    def recording_run(command: list[str], **kwargs: Any) -> Any:
        commands.append(list(command))
        return real_run(command, **kwargs)

    monkeypatch.setattr(security_module.subprocess, "run", recording_run)
    props = scram_over_tls(tmp_path).properties("SASL_SSL", tmp_path / "tls")
    password = props["ssl.keystore.password"]
    assert len(commands) == 3 and (tmp_path / "ca.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert not any(password in argument for command in commands for argument in command)
    assert (tmp_path / "tls" / "pass").stat().st_mode & 0o777 == 0o600
