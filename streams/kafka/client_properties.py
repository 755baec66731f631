"""Read a Kafka ``client.properties`` file (``--command-config``) into our settings.

Why this exists:
    Kafka users already hold their cluster's client configuration in a properties file, the one
    ``kafka-console-producer --command-config`` (Java keys) or ``kcat -F`` (librdkafka keys)
    takes. ``llmops --command-config FILE`` reads the same file, so that nobody retypes
    credentials into ``LLMOPS_*`` variables. This module turns its keys into
    :class:`~streams.settings.Settings` fields; the CLI applies them over the environment.

Usage:
    >>> overrides = settings_from_properties(Path("client.properties"))
    >>> Settings(**overrides)        # wins over LLMOPS_* variables, as the CLI does

Notes:
    Java keys: ``security.protocol``, ``sasl.mechanism``, ``sasl.jaas.config`` (PlainLoginModule or
    ScramLoginModule with ``username``/``password``; OAuthBearerLoginModule with
    ``unsecuredLoginStringClaim_sub``), ``ssl.truststore.location`` (type PEM or PKCS12; the
    certificates of a PKCS12 store are written out as PEM beside it in ``cache_dir``),
    ``ssl.keystore.location`` (type PEM: the key and its certificate chain in one file),
    ``ssl.key.password`` / ``ssl.keystore.password``. librdkafka keys: ``sasl.mechanisms``,
    ``sasl.username``, ``sasl.password``, ``ssl.ca.location``, ``ssl.certificate.location``,
    ``ssl.key.location``, ``ssl.key.password``, ``sasl.oauthbearer.config`` (``principal=NAME``).
    Other client tuning keys (``client.id``, ``acks``...) are returned as ignored, for the CLI to name.
    Errors name the file and the key, never a value.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import SecretStr

# Keys that tune a client rather than secure it: read and left alone (each CLI command sets its own).
IGNORED_PREFIXES = (
    "client.",
    "acks",
    "linger.",
    "batch.",
    "compression.",
    "request.timeout",
    "retries",
    "retry.",
    "session.timeout",
    "max.",
    "fetch.",
    "enable.",
    "socket.",
    "metadata.",
    "reconnect.",
    "group.",
    "auto.",
    "ssl.endpoint.identification.algorithm",
    "sasl.login.",
    "sasl.kerberos.",
    "ssl.truststore.password",
    "ssl.truststore.type",
    "ssl.keystore.type",
    "sasl.oauthbearer.method",
)
_JAAS = re.compile(r"^\s*([\w.$]+)\s+(required|requisite|sufficient|optional)\s*(.*?);?\s*$", re.DOTALL)
_JAAS_OPTION = re.compile(r'([\w.$-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|(\S+))')
_LOGIN_MODULES = {
    "org.apache.kafka.common.security.plain.PlainLoginModule": "PLAIN",
    "org.apache.kafka.common.security.scram.ScramLoginModule": "SCRAM",
    "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule": "OAUTHBEARER",
}


class PropertiesError(ValueError):
    """The properties file cannot be used; the message names the file and the key."""


def parse_properties(text: str) -> dict[str, str]:
    """Java ``.properties`` text as a dict: ``key=value`` or ``key: value``, ``#``/``!`` comments,
    lines continued with a trailing backslash, and the escapes ``\\t``, ``\\n``, ``\\\\`` and ``\\uXXXX``."""
    properties: dict[str, str] = {}
    logical: list[str] = []
    for raw in text.splitlines():
        line = raw.lstrip()
        if not logical and (not line or line[0] in "#!"):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:  # an odd number of backslashes continues the line
            logical.append(line[:-1])
            continue
        logical.append(line)
        entry, logical = "".join(logical), []
        match = re.match(r"((?:[^\s=:\\]|\\.)*)\s*[=:\s]?\s*(.*)$", entry, re.DOTALL)
        if match is None:  # pragma: no cover - the pattern matches any text
            continue
        properties[_unescape(match.group(1))] = _unescape(match.group(2))
    return properties


def _unescape(text: str) -> str:
    escapes = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}

    def replace(match: re.Match[str]) -> str:
        code = match.group(1)
        if code.startswith("u"):
            return chr(int(code[1:], 16))
        return escapes.get(code, code)

    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)", replace, text)


def parse_jaas(config: str, where: str) -> tuple[str, dict[str, str]]:
    """A ``sasl.jaas.config`` value: (PLAIN | SCRAM | OAUTHBEARER, its options)."""
    match = _JAAS.match(config)
    if match is None or match.group(1) not in _LOGIN_MODULES:
        raise PropertiesError(
            f"{where}: sasl.jaas.config must name PlainLoginModule, ScramLoginModule or OAuthBearerLoginModule "
            "followed by 'required' and its options (username=... password=...;)"
        )
    options = {
        name: _unescape(quoted) if quoted is not None else bare
        for name, quoted, bare in _JAAS_OPTION.findall(match.group(3))
    }
    return _LOGIN_MODULES[match.group(1)], options


def _path(properties: dict[str, str], key: str, where: str) -> Path:
    path = Path(properties[key]).expanduser()
    if not path.is_file():
        raise PropertiesError(f"{where}: {key} names a file that does not exist or cannot be read")
    return path


def _jaas_settings(properties: dict[str, str], where: str) -> dict[str, Any]:
    module, options = parse_jaas(properties["sasl.jaas.config"], where)
    mechanism = properties.get("sasl.mechanism") or properties.get("sasl.mechanisms")
    if module == "SCRAM" and mechanism not in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        raise PropertiesError(f"{where}: ScramLoginModule needs sasl.mechanism=SCRAM-SHA-256 or SCRAM-SHA-512")
    if module != "SCRAM" and mechanism not in (None, module):
        raise PropertiesError(f"{where}: sasl.jaas.config uses a {module} login module but sasl.mechanism differs")
    if module == "OAUTHBEARER":
        if "unsecuredLoginStringClaim_sub" not in options:
            raise PropertiesError(
                f"{where}: an OAuthBearerLoginModule is supported with unsecuredLoginStringClaim_sub (development "
                "brokers); for a real identity provider put the token in a file and set "
                "LLMOPS_SASL_OAUTHBEARER_TOKEN_FILE"
            )
        return {"sasl_mechanism": "OAUTHBEARER", "sasl_oauthbearer_sub": options["unsecuredLoginStringClaim_sub"]}
    if "username" not in options or "password" not in options:
        raise PropertiesError(f'{where}: sasl.jaas.config needs username="..." and password="..."')
    return {
        "sasl_mechanism": mechanism or module,
        "sasl_username": options["username"],
        "sasl_password": SecretStr(options["password"]),
    }


def _truststore(properties: dict[str, str], where: str, cache_dir: Path) -> Path:
    """The CA file of a Java trust store: the file itself (PEM), or its certificates as PEM (PKCS12)."""
    location = _path(properties, "ssl.truststore.location", where)
    kind = properties.get("ssl.truststore.type", "JKS").upper()
    if kind == "PEM":
        return location
    if kind != "PKCS12":
        raise PropertiesError(
            f"{where}: ssl.truststore.type {kind} cannot be read here; use PEM or PKCS12 (keytool -importkeystore "
            "-deststoretype PKCS12 converts a JKS store) or give ssl.ca.location"
        )
    from cryptography.hazmat.primitives.serialization import Encoding, pkcs12

    password = properties.get("ssl.truststore.password")
    try:
        store = pkcs12.load_pkcs12(location.read_bytes(), password.encode() if password else None)
    except ValueError:
        raise PropertiesError(f"{where}: cannot open ssl.truststore.location: check ssl.truststore.password") from None
    certificates = [*([store.cert] if store.cert else []), *store.additional_certs]
    if not certificates:
        raise PropertiesError(f"{where}: ssl.truststore.location holds no certificate")
    cache_dir.mkdir(parents=True, exist_ok=True)
    pem = cache_dir / f"{location.stem}-ca.pem"
    pem.write_bytes(b"".join(entry.certificate.public_bytes(Encoding.PEM) for entry in certificates))
    return pem


def _tls_settings(properties: dict[str, str], where: str, cache_dir: Path) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    if "ssl.ca.location" in properties:
        settings["ssl_cafile"] = _path(properties, "ssl.ca.location", where)
    elif "ssl.truststore.location" in properties:
        settings["ssl_cafile"] = _truststore(properties, where, cache_dir)
    if "ssl.certificate.location" in properties:
        settings["ssl_certfile"] = _path(properties, "ssl.certificate.location", where)
        if "ssl.key.location" in properties:
            settings["ssl_keyfile"] = _path(properties, "ssl.key.location", where)
    elif "ssl.keystore.location" in properties:
        if properties.get("ssl.keystore.type", "JKS").upper() != "PEM":
            raise PropertiesError(
                f"{where}: ssl.keystore.location is read as PEM only (ssl.keystore.type=PEM, the key and its "
                "certificate chain in one file); or give ssl.certificate.location and ssl.key.location"
            )
        settings["ssl_certfile"] = _path(properties, "ssl.keystore.location", where)
    password = properties.get("ssl.key.password") or properties.get("ssl.keystore.password")
    if password:
        settings["ssl_key_password"] = SecretStr(password)
    return settings


def _sasl_settings(properties: dict[str, str], where: str) -> dict[str, Any]:
    if "sasl.jaas.config" in properties:
        return _jaas_settings(properties, where)
    mechanism = properties.get("sasl.mechanism") or properties.get("sasl.mechanisms")
    if mechanism is None:
        return {}
    settings: dict[str, Any] = {"sasl_mechanism": mechanism}
    if mechanism == "OAUTHBEARER":
        config = dict(re.findall(r"(\w+)=(\S+)", properties.get("sasl.oauthbearer.config", "")))
        if "principal" not in config:
            raise PropertiesError(
                f"{where}: OAUTHBEARER needs sasl.oauthbearer.config=principal=NAME (unsecured JWT, development "
                "brokers) or sasl.jaas.config; for a real identity provider set LLMOPS_SASL_OAUTHBEARER_TOKEN_FILE"
            )
        settings["sasl_oauthbearer_sub"] = config["principal"]
        return settings
    if "sasl.username" in properties:
        settings["sasl_username"] = properties["sasl.username"]
    if "sasl.password" in properties:
        settings["sasl_password"] = SecretStr(properties["sasl.password"])
    return settings


KNOWN_KEYS = {
    "bootstrap.servers",
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.jaas.config",
    "sasl.username",
    "sasl.password",
    "sasl.oauthbearer.config",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.key.password",
    "ssl.keystore.location",
    "ssl.keystore.password",
    "ssl.truststore.location",
}


def settings_from_properties(path: Path, cache_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """The :class:`Settings` fields a client.properties file sets, and the keys it ignored.

    ``cache_dir`` receives the PEM form of a PKCS12 trust store's certificates (public data).

    Raises:
        PropertiesError: the file cannot be read, or a key cannot be used (the message names it).
    """
    where = f"--command-config {path}"
    try:
        properties = parse_properties(path.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise PropertiesError(f"{where}: cannot read the file ({getattr(error, 'strerror', None) or error})") from None
    unknown = sorted(key for key in properties if key not in KNOWN_KEYS and not key.startswith(IGNORED_PREFIXES))
    if unknown:
        raise PropertiesError(f"{where}: unsupported key(s) {', '.join(unknown)}; docs/cli.md lists the keys read")
    settings: dict[str, Any] = {}
    if "bootstrap.servers" in properties:
        settings["bootstrap_servers"] = properties["bootstrap.servers"]
    if "security.protocol" in properties:
        settings["security_protocol"] = properties["security.protocol"].upper()
    settings.update(_sasl_settings(properties, where))
    settings.update(_tls_settings(properties, where, cache_dir))
    ignored = sorted(key for key in properties if key not in KNOWN_KEYS)
    return settings, ignored
