"""Ed25519 signatures on ``models.control`` events: who may change what answers in production.

Why this exists:
    Anyone who can write the control topic could otherwise put any model into production. Every
    event is signed by the model manager's private key over a canonical encoding of the record
    (every field but the signature, the artifact by its sha256), and every worker verifies it
    against a set of trusted public keys before anything else. The signature names its key
    (``key_id``: the first 16 hex digits of the sha256 of the raw public key), so keys rotate.

Keys:
    - ``LLMOPS_MODEL_TRUSTED_KEYS``: a file, or a directory of files, each one Ed25519 public key
      (PEM ``-----BEGIN PUBLIC KEY-----`` or the 32 raw bytes). Workers and the CLI trust exactly
      these.
    - ``LLMOPS_MODEL_SIGNING_KEY_FILE``: the model manager's private key (PEM PKCS#8, unencrypted,
      mode 0600). A path, never a value on a command line; nothing here logs key material.
    - Neither set (the embedded default: ``make run``, tests): a development key pair is made once
      under ``<data_dir>/keys/`` (private key mode 0600) and the local workers trust it. That is
      for one machine only: production MUST configure its own keys (trusted keys on every worker,
      the private key only where models are managed).

Rotation (no event is ever unverifiable):
    1. add the new public key to the trusted set of every worker (and restart them);
    2. point ``LLMOPS_MODEL_SIGNING_KEY_FILE`` at the new private key: new events use it;
    3. re-sign the current state with the new key (``llmops models resign``), or let the old
       versions retire (archived, then deleted);
    4. remove the old public key from the trusted set.

Usage:
    >>> signer = signer_from_settings(settings)
    >>> signed = signer.sign(event)
    >>> trusted_keys_from_settings(settings).verify(signed)      # raises ControlRejected
    >>> openssl genpkey -algorithm ed25519 -out signing.pem && openssl pkey -in signing.pem -pubout -out signing.pub
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from streams.logs import get_logger
from streams.models.rejections import ControlRejected, Reason
from streams.models.version import ModelVersion

log = get_logger(__name__)
CANONICAL_PREFIX = b"llmops.models.control.v2\n"  # v2: the namespace is signed too
DEV_KEY_DIR = "keys"
DEV_PRIVATE = "model-signing-dev.pem"
DEV_PUBLIC = "model-signing-dev.pub"


class SigningKeyError(ValueError):
    """A key file is missing, unreadable or not an Ed25519 key; the message names the file, never its bytes."""


def canonical_bytes(version: ModelVersion, namespace: str = "") -> bytes:
    """What is signed: every field but the signature, the artifact as its sha256, and the namespace.

    The namespace (``""`` for live traffic) binds a signature to one control topic: an event
    signed for a replay namespace does not verify when copied into the live topic.
    """
    record: dict[str, Any] = version.to_avro()
    del record["signature"]
    record["namespace"] = namespace
    artifact = record.pop("artifact")
    record["artifact_sha256"] = hashlib.sha256(artifact).hexdigest() if artifact is not None else None
    return CANONICAL_PREFIX + json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_of(key: Ed25519PublicKey) -> str:
    return hashlib.sha256(raw_public(key)).hexdigest()[:16]


@dataclass(frozen=True)
class Signer:
    """A private key that signs control events; ``key_id`` names its public half."""

    private_key: Ed25519PrivateKey
    key_id: str

    @classmethod
    def of(cls, private_key: Ed25519PrivateKey) -> Signer:
        return cls(private_key, key_id_of(private_key.public_key()))

    def sign(self, version: ModelVersion, namespace: str = "") -> ModelVersion:
        """``version`` signed for the control topic of ``namespace`` (``""``: live)."""
        unsigned = replace(version, key_id=self.key_id, signature=None)
        return replace(unsigned, signature=self.private_key.sign(canonical_bytes(unsigned, namespace)))

    def __repr__(self) -> str:  # never the key
        return f"Signer(key_id={self.key_id!r})"


@dataclass(frozen=True)
class TrustedKeys:
    """The public keys whose signatures a worker accepts, by key id."""

    keys: Mapping[str, Ed25519PublicKey]

    @classmethod
    def of(cls, keys: Iterable[Ed25519PublicKey]) -> TrustedKeys:
        return cls({key_id_of(key): key for key in keys})

    def verify(self, version: ModelVersion, namespace: str = "") -> None:
        """ControlRejected (UNSIGNED, UNKNOWN_KEY, BAD_SIGNATURE) unless a trusted key signed it for ``namespace``."""
        if version.signature is None or not version.key_id:
            raise ControlRejected(
                Reason.UNSIGNED,
                f"{version.short} is not signed; control events are written by `llmops models ...` with "
                "LLMOPS_MODEL_SIGNING_KEY_FILE, never by hand",
            )
        key = self.keys.get(version.key_id)
        if key is None:
            raise ControlRejected(
                Reason.UNKNOWN_KEY,
                f"{version.short} is signed by key {version.key_id}, which this worker does not trust "
                f"(trusted: {', '.join(sorted(self.keys)) or 'none'}); add its public key to LLMOPS_MODEL_TRUSTED_KEYS "
                "if it is yours",
            )
        try:
            key.verify(version.signature, canonical_bytes(version, namespace))
        except InvalidSignature:
            raise ControlRejected(
                Reason.BAD_SIGNATURE,
                f"{version.short}: the signature of key {version.key_id} does not match the record "
                "(changed after signing, signed for another namespace's control topic, or forged)",
            ) from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An unencrypted PEM (PKCS#8) Ed25519 private key; warns when others may read the file."""
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as error:
        raise SigningKeyError(f"cannot read the signing key {path}: {error.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("signing_key_readable_by_others", path=str(path), fix=f"chmod 600 {path}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise SigningKeyError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} is not an Ed25519 key (make one: openssl genpkey -algorithm ed25519)")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A PEM public key or the 32 raw bytes of an Ed25519 public key."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SigningKeyError(f"cannot read the trusted key {path}: {error.strerror}") from None
    if len(data) == 32:
        return Ed25519PublicKey.from_public_bytes(data)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise SigningKeyError(f"{path} is neither a PEM public key nor 32 raw Ed25519 bytes") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{path} is not an Ed25519 public key")
    return key


def load_trusted_keys(path: Path) -> TrustedKeys:
    """Every key in ``path`` (a file, or each visible regular file of a directory)."""
    visible = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")) if path.is_dir() else []
    files = visible if path.is_dir() else [path]
    keys = TrustedKeys.of(load_public_key(p) for p in files)
    if not keys.keys:
        raise SigningKeyError(f"no public keys in {path}; put one PEM or raw Ed25519 public key per file there")
    return keys


def dev_key_pair(data_dir: Path) -> Ed25519PrivateKey:
    """The development signing key under ``<data_dir>/keys/``, made once (0600) if missing.

    For the embedded default only (one machine); production configures its own keys. Processes
    that start together agree on one key: the file appears whole (hard link of a finished file).
    """
    directory = data_dir / DEV_KEY_DIR
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = directory / DEV_PRIVATE
    if not private.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        temporary = directory / f".{DEV_PRIVATE}.{os.getpid()}"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(pem)
        with contextlib.suppress(FileExistsError):  # another process made it first: use that one
            os.link(temporary, private)
        temporary.unlink()
        log.info("model_signing_dev_key_created", path=str(private), key_id=key_id_of(key.public_key()))
    key = load_private_key(private)
    public = directory / DEV_PUBLIC
    if not public.exists():
        public.write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
    return key


def trusted_keys_from_settings(settings: Any) -> TrustedKeys:
    """``LLMOPS_MODEL_TRUSTED_KEYS``, or the development key of the embedded default."""
    if settings.model_trusted_keys is not None:
        return load_trusted_keys(settings.model_trusted_keys)
    return TrustedKeys.of([dev_key_pair(settings.data_dir).public_key()])


def signer_from_settings(settings: Any) -> Signer:
    """``LLMOPS_MODEL_SIGNING_KEY_FILE``, or the development key when no trusted keys are configured."""
    if settings.model_signing_key_file is not None:
        return Signer.of(load_private_key(settings.model_signing_key_file))
    if settings.model_trusted_keys is not None:
        raise SigningKeyError(
            "LLMOPS_MODEL_TRUSTED_KEYS is set but LLMOPS_MODEL_SIGNING_KEY_FILE is not: set it to the path of "
            "the private key whose public half is trusted"
        )
    if settings.data_dir not in _DEV_KEY_ANNOUNCED:  # once per process, not once per signed event
        _DEV_KEY_ANNOUNCED.add(settings.data_dir)
        log.info("model_signing_dev_key", data_dir=str(settings.data_dir), production="configure your own keys")
    return Signer.of(dev_key_pair(settings.data_dir))


_DEV_KEY_ANNOUNCED: set[Path] = set()


def can_sign(settings: Any) -> bool:
    """Whether this process has a signing key (configured, or the embedded default's dev key)."""
    return settings.model_signing_key_file is not None or settings.model_trusted_keys is None
