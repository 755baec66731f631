"""Client security from one set of settings: aiokafka (and Faust) and librdkafka alike.

Why this exists:
    The project runs two Kafka client libraries (aiokafka under Faust and the admin tools,
    librdkafka for the request/reply path). Both must sign in the same way from the same
    ``LLMOPS_*`` settings: TLS with a CA, mutual TLS with a client certificate and key (PEM),
    SASL/PLAIN, SCRAM and OAUTHBEARER. Each mapping is written once, here.

Usage:
    >>> AIOKafkaProducer(bootstrap_servers=..., **aiokafka_security(settings))
    >>> Producer({"bootstrap.servers": ..., **rdkafka_security(settings)})

Notes:
    OAUTHBEARER takes a token from a file (``LLMOPS_SASL_OAUTHBEARER_TOKEN_FILE``, read again at
    every login, so an agent such as a Kubernetes projected token or a sidecar keeps it fresh), or,
    for development brokers that run Kafka's default unsecured validator, an unsecured JWT
    (``alg: none``) made for ``LLMOPS_SASL_OAUTHBEARER_SUB``: Kafka's own
    ``unsecuredLoginStringClaim_sub`` and librdkafka's ``enable.sasl.oauthbearer.unsecure.jwt``.
"""

from __future__ import annotations

import base64
import binascii
import json
import ssl
import time
from collections.abc import Callable
from typing import Any

from aiokafka.abc import AbstractTokenProvider

from streams.settings import Settings

TLS_PROTOCOLS = ("SSL", "SASL_SSL")
UNSECURED_TOKEN_SECONDS = 3600
# A token whose lifetime we cannot read is read again after this long.
UNKNOWN_LIFETIME_SECONDS = 300


class ClientSecurityError(ValueError):
    """The client cannot sign in as configured; the message names the setting to change."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsecured_jwt(subject: str, now: float, lifetime: float = UNSECURED_TOKEN_SECONDS) -> str:
    """An unsecured JWS (``alg: none``) for ``subject``, as Kafka's OAuthBearerUnsecuredLoginCallbackHandler makes."""
    header = _b64url(json.dumps({"alg": "none"}).encode())
    claims = {"sub": subject, "iat": int(now), "exp": int(now + lifetime)}
    return f"{header}.{_b64url(json.dumps(claims).encode())}."


def token_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (the broker verifies); {} when it is not a readable JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def oauth_token(settings: Settings, clock: Callable[[], float] = time.time) -> tuple[str, float]:
    """The OAUTHBEARER token to sign in with now, and when it expires (seconds since the epoch)."""
    now = clock()
    if settings.sasl_oauthbearer_sub is not None:
        token = unsecured_jwt(settings.sasl_oauthbearer_sub, now)
    elif settings.sasl_oauthbearer_token_file is not None:
        try:
            token = settings.sasl_oauthbearer_token_file.read_text().strip()
        except OSError as error:
            raise ClientSecurityError(
                f"cannot read the OAUTHBEARER token file ({error.strerror}): check LLMOPS_SASL_OAUTHBEARER_TOKEN_FILE"
            ) from None
        if not token:
            raise ClientSecurityError("the OAUTHBEARER token file is empty: check LLMOPS_SASL_OAUTHBEARER_TOKEN_FILE")
    else:
        raise ClientSecurityError("OAUTHBEARER needs LLMOPS_SASL_OAUTHBEARER_TOKEN_FILE or LLMOPS_SASL_OAUTHBEARER_SUB")
    expiry = token_claims(token).get("exp")
    return token, float(expiry) if isinstance(expiry, int | float) else now + UNKNOWN_LIFETIME_SECONDS


class SettingsTokenProvider(AbstractTokenProvider):  # type: ignore[misc] # aiokafka ships no type hints here
    """aiokafka's token provider for :func:`oauth_token` (a file read runs off the event loop)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def token(self) -> str:
        import asyncio

        token, _ = await asyncio.to_thread(oauth_token, self._settings)
        return token


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of aiokafka clients (CA, and the client certificate for mTLS); None without TLS."""
    if settings.security_protocol not in TLS_PROTOCOLS:
        return None
    from aiokafka.helpers import create_ssl_context

    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None,
            certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
            keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
            password=settings.ssl_key_password.get_secret_value() if settings.ssl_key_password else None,
        )
        return context
    except (OSError, ssl.SSLError) as error:
        raise ClientSecurityError(
            f"cannot load the TLS files ({getattr(error, 'strerror', None) or error.__class__.__name__}): check "
            "LLMOPS_SSL_CAFILE, LLMOPS_SSL_CERTFILE, LLMOPS_SSL_KEYFILE and LLMOPS_SSL_KEY_PASSWORD"
        ) from None


def aiokafka_security(settings: Settings) -> dict[str, object]:
    """Security keyword arguments shared by aiokafka producers, consumers and admin clients."""
    config: dict[str, object] = {"security_protocol": settings.security_protocol}
    if settings.sasl_mechanism == "OAUTHBEARER":
        config["sasl_mechanism"] = "OAUTHBEARER"
        config["sasl_oauth_token_provider"] = SettingsTokenProvider(settings)
    elif settings.sasl_mechanism:
        config["sasl_mechanism"] = settings.sasl_mechanism
        config["sasl_plain_username"] = settings.sasl_username
        config["sasl_plain_password"] = settings.sasl_password.get_secret_value() if settings.sasl_password else None
    context = ssl_context(settings)
    if context is not None:
        config["ssl_context"] = context
    return config


def rdkafka_security(settings: Settings) -> dict[str, Any]:
    """The same settings as librdkafka configuration properties."""
    config: dict[str, Any] = {"security.protocol": settings.security_protocol}
    if settings.sasl_mechanism:
        config["sasl.mechanism"] = settings.sasl_mechanism
    if settings.sasl_mechanism == "OAUTHBEARER":
        if settings.sasl_oauthbearer_sub is not None:
            config["enable.sasl.oauthbearer.unsecure.jwt"] = True
            config["sasl.oauthbearer.config"] = f"principal={settings.sasl_oauthbearer_sub}"
        else:
            config["oauth_cb"] = lambda _config: _rdkafka_token(settings)
    elif settings.sasl_mechanism:
        config["sasl.username"] = settings.sasl_username
        if settings.sasl_password is not None:
            config["sasl.password"] = settings.sasl_password.get_secret_value()
    if settings.security_protocol in TLS_PROTOCOLS:
        files = {
            "ssl.ca.location": settings.ssl_cafile,
            "ssl.certificate.location": settings.ssl_certfile,
            # A PEM file may hold the certificate chain and the key: then it serves as both.
            "ssl.key.location": settings.ssl_keyfile or settings.ssl_certfile,
        }
        config.update({key: str(path) for key, path in files.items() if path is not None})
        if settings.ssl_key_password is not None:
            config["ssl.key.password"] = settings.ssl_key_password.get_secret_value()
    return config


def _rdkafka_token(settings: Settings) -> tuple[str, float, str]:
    """confluent-kafka's ``oauth_cb`` answer: token, expiry (epoch seconds) and principal."""
    token, expiry = oauth_token(settings)
    return token, expiry, str(token_claims(token).get("sub", ""))
