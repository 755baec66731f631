"""SASL (SCRAM, OAUTHBEARER) and TLS (also mutual) for the embedded broker, from the settings clients use.

Why this exists:
    A client configured with ``LLMOPS_SECURITY_PROTOCOL=SASL_SSL`` and SCRAM credentials must
    find a broker that asks for them, also on a laptop or in CI. This module turns those settings
    into broker properties (a SASL or SSL listener, SCRAM as the inter-broker mechanism), the
    ``--add-scram`` argument that creates the user when KRaft storage is formatted, and, for TLS,
    a self-signed certificate made with ``keytool`` whose PEM is written where
    ``LLMOPS_SSL_CAFILE`` points, so that clients verify the broker against it. With
    ``client_ca_file`` the listener asks every client for a certificate signed by that CA
    (mutual TLS); with ``OAUTHBEARER`` it takes Kafka's unsecured JWTs (development only).

Usage:
    >>> security = BrokerSecurity.from_settings(settings)   # None for PLAINTEXT
    >>> EmbeddedKafka(home, port=9092, security=security).start()

Notes:
    The user created is the broker's super user (clients and inter-broker traffic use it).
    ``authorizer=True`` (``LLMOPS_KAFKA_AUTHORIZER``) enforces ACLs: only that user may do
    anything until grants are made (``llmops kafka acls --apply``, from :mod:`streams.kafka.acls`); the
    controller listener then takes SASL/PLAIN with that user, otherwise it stays PLAINTEXT on
    loopback. Files holding secrets (server properties, keystores, the storage tool's argument
    file) are 0600. No password ever reaches a command line, where ``ps`` would show it to every
    user of the machine: ``keytool`` reads the store password from its environment
    (``-storepass:env``) and ``kafka-storage format`` gets ``--add-scram`` from a Java argument file
    (:meth:`EmbeddedKafka.format_storage <streams.kafka.broker.EmbeddedKafka.format_storage>`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from streams.settings import Settings

SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
OAUTHBEARER = "OAUTHBEARER"
# keytool reads the store password from this variable (`-storepass:env`), never from argv.
STORE_PASSWORD_ENV = "LLMOPS_KEYTOOL_STOREPASS"  # noqa: S105 - a variable name, not a password


def keytool_steps(keystore: Path, truststore: Path, ca_file: Path) -> list[list[str]]:
    """keytool arguments that make a self-signed pair for 127.0.0.1/localhost and export its PEM.

    Passwords come from the environment variable ``STORE_PASSWORD_ENV`` (``:env``), so that the
    command lines hold none.
    """
    store = ["-storetype", "PKCS12", "-storepass:env", STORE_PASSWORD_ENV]
    return [
        [
            *("-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048", "-validity", "3650"),
            *("-dname", "CN=localhost", "-ext", "SAN=ip:127.0.0.1,dns:localhost", "-keystore", str(keystore)),
            *(*store, "-keypass:env", STORE_PASSWORD_ENV),
        ],
        ["-exportcert", "-rfc", "-alias", "broker", "-keystore", str(keystore), *store, "-file", str(ca_file)],
        ["-importcert", "-noprompt", "-alias", "broker", "-file", str(ca_file), "-keystore", str(truststore), *store],
    ]


class BrokerSecurityError(RuntimeError):
    """The embedded broker cannot be secured as configured; the message says what to change."""


@dataclass(frozen=True)
class BrokerSecurity:
    """How the embedded broker's client listener is secured."""

    protocol: str  # SASL_PLAINTEXT, SASL_SSL or SSL
    mechanism: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    ca_file: Path | None = None
    # ACLs enforced (KRaft's StandardAuthorizer); the SASL user above is the only super user.
    authorizer: bool = False
    # More SCRAM users created when storage is formatted (name, password): per-agent principals.
    users: tuple[tuple[str, SecretStr], ...] = ()
    # Mutual TLS: clients must present a certificate signed by a CA in this PEM file.
    client_ca_file: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> BrokerSecurity | None:
        """The broker side of the client settings; None when they ask for PLAINTEXT."""
        protocol = settings.security_protocol
        if protocol == "PLAINTEXT":
            return None
        oauth = settings.sasl_mechanism == OAUTHBEARER
        security = cls(
            protocol,
            settings.sasl_mechanism,
            settings.sasl_oauthbearer_sub if oauth else settings.sasl_username,
            None if oauth else settings.sasl_password,
            settings.ssl_cafile,
            authorizer=settings.kafka_authorizer,
        )
        security.check()
        return security

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol.endswith("SSL")

    @property
    def scram(self) -> bool:
        return self.sasl and self.mechanism in SCRAM_MECHANISMS

    def check(self) -> None:
        if self.sasl and self.mechanism == OAUTHBEARER:
            if not self.username:
                raise BrokerSecurityError(
                    "the embedded broker takes OAUTHBEARER with unsecured JWTs (development only): "
                    "set LLMOPS_SASL_OAUTHBEARER_SUB, the subject of its own login"
                )
        elif self.sasl and (not self.scram or not self.username or not self.password):
            raise BrokerSecurityError(
                f"the embedded broker supports SASL with {' or '.join(SCRAM_MECHANISMS)} or {OAUTHBEARER}: set "
                "LLMOPS_SASL_MECHANISM, LLMOPS_SASL_USERNAME and LLMOPS_SASL_PASSWORD"
            )
        if self.authorizer and not self.scram:
            raise BrokerSecurityError(
                "ACLs on the embedded broker (LLMOPS_KAFKA_AUTHORIZER) need SASL/SCRAM: "
                "its SCRAM user is the super user"
            )
        if self.client_ca_file is not None and not self.tls:
            raise BrokerSecurityError("client certificates (mutual TLS) need an SSL or SASL_SSL listener")
        if self.tls and self.ca_file is None:
            raise BrokerSecurityError(
                "TLS needs LLMOPS_SSL_CAFILE: the embedded broker writes its self-signed certificate there "
                "(when the file does not exist yet) and clients verify the broker against it"
            )

    def format_arguments(self) -> list[str]:
        """``kafka-storage format`` arguments that create the SCRAM user in the metadata log."""
        if not self.scram:
            return []
        assert self.password is not None
        users = [(self.username, self.password), *self.users]
        return [
            argument
            for name, password in users
            for argument in ("--add-scram", f"{self.mechanism}=[name={name},password={password.get_secret_value()}]")
        ]

    def properties(self, listener: str, tls_dir: Path) -> dict[str, str]:
        """Broker properties for the client listener named ``listener`` (its protocol's name)."""
        props: dict[str, str] = {}
        prefix = f"listener.name.{listener.lower()}"
        if self.sasl:
            assert self.mechanism is not None
            props["sasl.enabled.mechanisms"] = self.mechanism
            props["sasl.mechanism.inter.broker.protocol"] = self.mechanism
            props[f"{prefix}.{self.mechanism.lower()}.sasl.jaas.config"] = self._jaas()
            props["super.users"] = f"User:{self.username}"
        if self.authorizer:
            props.update(self._authorizer_properties(listener))
        if self.tls:
            store_password = self._certificates(tls_dir)
            props.update(
                {
                    "ssl.keystore.type": "PKCS12",
                    "ssl.keystore.location": str(tls_dir / "keystore.p12"),
                    "ssl.keystore.password": store_password,
                    "ssl.key.password": store_password,
                    "ssl.truststore.type": "PKCS12",
                    "ssl.truststore.location": str(tls_dir / "truststore.p12"),
                    "ssl.truststore.password": store_password,
                }
            )
            if self.client_ca_file is not None:
                del props["ssl.truststore.password"]
                props.update(self._client_auth_properties(tls_dir))
        return props

    def _jaas(self) -> str:
        """The listener's login: SCRAM with the super user's password, or (OAUTHBEARER) an unsecured JWT.

        OAUTHBEARER uses Kafka's default unsecured login and validator (``alg: none`` tokens):
        for development and tests only, never for a broker others can reach.
        """
        if self.mechanism == OAUTHBEARER:
            return (
                "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required "
                f'unsecuredLoginStringClaim_sub="{self.username}";'
            )
        assert self.password is not None
        return (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{self.username}" password="{self.password.get_secret_value()}";'
        )

    def _client_auth_properties(self, tls_dir: Path) -> dict[str, str]:
        """Mutual TLS: a PEM trust store of the client CA and the broker's own certificate.

        The broker's certificate stays trusted for its inter-broker connections, which present it.
        """
        assert self.client_ca_file is not None and self.ca_file is not None
        truststore = tls_dir / "client-truststore.pem"
        truststore.write_text(self.client_ca_file.read_text().strip() + "\n" + self.ca_file.read_text().strip() + "\n")
        return {
            "ssl.client.auth": "required",
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(truststore),
        }

    def _authorizer_properties(self, listener: str) -> dict[str, str]:
        """StandardAuthorizer on, and a controller listener whose callers are known.

        The broker half of a combined node calls its controller half over the controller
        listener, and the controller authorizes those calls: on PLAINTEXT the caller would be
        ``User:ANONYMOUS``, which would then have to be a super user, so any local process could
        reach the controller port as one. The controller listener therefore takes SASL/PLAIN with
        this one user (SCRAM cannot serve it: its credentials live in the metadata the controller
        is starting up).
        """
        assert self.password is not None
        password = self.password.get_secret_value()
        return {
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            "listener.security.protocol.map": f"{listener}:{listener},CONTROLLER:SASL_PLAINTEXT",
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": (
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="{self.username}" password="{password}" user_{self.username}="{password}";'
            ),
        }

    def _certificates(self, tls_dir: Path) -> str:
        """Make a self-signed key pair for 127.0.0.1/localhost once; return the store password."""
        assert self.ca_file is not None
        keystore, truststore, password_file = tls_dir / "keystore.p12", tls_dir / "truststore.p12", tls_dir / "pass"
        if keystore.exists() and truststore.exists() and password_file.exists() and self.ca_file.exists():
            return password_file.read_text()
        keytool = shutil.which("keytool")
        if keytool is None:
            raise BrokerSecurityError("'keytool' (from the Java runtime) is needed to make the broker's certificate")
        shutil.rmtree(tls_dir, ignore_errors=True)
        tls_dir.mkdir(parents=True, mode=0o700)
        password = secrets.token_urlsafe(24)
        password_file.touch(mode=0o600)
        password_file.write_text(password)
        self.ca_file.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, STORE_PASSWORD_ENV: password}
        for step in keytool_steps(keystore, truststore, self.ca_file):
            result = subprocess.run([keytool, *step], capture_output=True, text=True, check=False, env=env)
            if result.returncode != 0:
                raise BrokerSecurityError(f"keytool {step[0]} failed:\n{(result.stdout + result.stderr)[-1000:]}")
        keystore.chmod(0o600)
        return password
