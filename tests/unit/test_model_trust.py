"""Workers trust a control event only when it is signed, intact and allowed (issue 18, finding 1).

The same checks run where events are written (``write_events``) and where they are read (the
follower's ``control_check``): signature by a trusted key, artifact digests, lifecycle rules.
"""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streams.kafka.avro import AvroCodec, EmbeddedRegistry
from streams.models.artifacts import DEFAULT_MAX_BYTES
from streams.models.lifecycle import check_version, classifier_version, control_check
from streams.models.registry import ModelVersion, QaGate, Registry, Stage
from streams.models.rejections import ControlRejected, Reason, RegistryError
from streams.models.rules import check_event, check_removal
from streams.models.signing import (
    Signer,
    SigningKeyError,
    TrustedKeys,
    dev_key_pair,
    load_trusted_keys,
    signer_from_settings,
    trusted_keys_from_settings,
)
from streams.settings import Settings

from .test_artifacts import external_tensor, identity_head

CODEC = AvroCodec(EmbeddedRegistry.from_directory())
GATE = QaGate(0.6, 0.02)
OLD, NEW = Signer.of(Ed25519PrivateKey.generate()), Signer.of(Ed25519PrivateKey.generate())
TRUSTED = TrustedKeys.of([OLD.private_key.public_key()])


def head(seed: float = 0.25) -> bytes:
    from onnx import TensorProto, helper

    return identity_head(helper.make_tensor("inside", TensorProto.FLOAT, [2], [seed, 1 - seed]))


def candidate(seed: float = 0.25) -> ModelVersion:
    version = classifier_version("topic", head(seed), ["a", "b"], "e" * 64, actor="t", note="test")
    return replace(version, updated_at_ms=1)


def reject_reason(registry: Registry, version: ModelVersion, trusted: TrustedKeys = TRUSTED) -> Reason:
    with pytest.raises(ControlRejected) as refused:
        check_version(registry, version, trusted, DEFAULT_MAX_BYTES)
    return refused.value.reason


def lifecycle(registry: Registry, signer: Signer = OLD) -> ModelVersion:
    """register -> qa -> evaluated -> production, each event signed, checked and applied."""
    v = candidate()
    for events in (
        lambda: registry.register(v),
        lambda: registry.promote("topic", v.version, Stage.QA, actor="t", now_ms=2),
        lambda: registry.record_evaluation("topic", v.version, {"accuracy": 0.9}, GATE, actor="t", now_ms=3),
        lambda: registry.promote("topic", v.version, Stage.PRODUCTION, actor="t", now_ms=4, approved_by="ana"),
    ):
        for event in events():
            signed = signer.sign(event)
            check_version(registry, signed, TrustedKeys.of([signer.private_key.public_key()]), DEFAULT_MAX_BYTES)
            registry.apply(signed)
    current = registry.production("topic")
    assert current is not None
    return current


# --- signatures -------------------------------------------------------------------------------


def test_a_signed_lifecycle_passes_and_survives_the_avro_round_trip() -> None:
    current = lifecycle(Registry())
    decoded = ModelVersion.from_avro(CODEC.decode(CODEC.encode("ModelVersion", current.to_avro(), "t"), "ModelVersion"))
    assert decoded == current and decoded.key_id == OLD.key_id
    TRUSTED.verify(decoded)


def test_unsigned_wrong_key_unknown_key_and_tampered_records_are_refused() -> None:
    v = candidate()
    assert reject_reason(Registry(), v) is Reason.UNSIGNED
    assert reject_reason(Registry(), NEW.sign(v)) is Reason.UNKNOWN_KEY
    forged_as_old = replace(NEW.sign(v), key_id=OLD.key_id)  # the right key id, the wrong key's signature
    assert reject_reason(Registry(), forged_as_old) is Reason.BAD_SIGNATURE
    signed = OLD.sign(v)
    for tampered in (
        replace(signed, stage=Stage.PRODUCTION),
        replace(signed, approved_by="mallory"),
        replace(signed, labels=("b", "a")),
        replace(signed, metrics={"holdout_accuracy": 1.0}),
        replace(signed, note="changed"),
    ):
        assert reject_reason(Registry(), tampered) is Reason.BAD_SIGNATURE, tampered


def test_rotated_keys_old_events_stay_valid_while_both_keys_are_trusted() -> None:
    registry = Registry()
    current = lifecycle(registry, OLD)
    both = TrustedKeys.of([OLD.private_key.public_key(), NEW.private_key.public_key()])
    both.verify(current)  # step 1: the new key is added, old events still verify
    resigned = NEW.sign(current)  # step 3: re-signed with the new key
    check_version(registry, resigned, both, DEFAULT_MAX_BYTES)
    only_new = TrustedKeys.of([NEW.private_key.public_key()])  # step 4: the old key removed
    only_new.verify(resigned)
    with pytest.raises(ControlRejected) as refused:
        only_new.verify(current)
    assert refused.value.reason is Reason.UNKNOWN_KEY


# --- digests and artifacts ---------------------------------------------------------------------


def test_an_artifact_swapped_after_registration_is_a_digest_mismatch_even_when_signed() -> None:
    v = candidate(0.25)
    swapped = OLD.sign(replace(v, artifact=head(0.9)))  # a trusted signer's mistake, or a stolen key
    assert reject_reason(Registry(), swapped) is Reason.DIGEST_MISMATCH
    relabelled = OLD.sign(replace(v, labels=("b", "a")))
    assert reject_reason(Registry(), relabelled) is Reason.DIGEST_MISMATCH
    renamed = OLD.sign(replace(v, version="0" * 64))
    assert reject_reason(Registry(), renamed) is Reason.DIGEST_MISMATCH


def test_external_data_and_oversized_artifacts_are_refused_by_the_control_check() -> None:
    leaky = classifier_version(
        "topic", identity_head(external_tensor("./.env", 8)), ["a"], "e" * 64, actor="t", note="x"
    )
    assert reject_reason(Registry(), OLD.sign(leaky)) is Reason.EXTERNAL_DATA
    big = OLD.sign(candidate())
    with pytest.raises(ControlRejected) as refused:
        check_version(Registry(), big, TRUSTED, max_bytes=len(big.artifact or b"") - 1)
    assert refused.value.reason is Reason.TOO_LARGE


# --- lifecycle rules, the same for the CLI and the worker --------------------------------------


def test_a_signed_event_that_skips_qa_is_a_rule_violation() -> None:
    registry = Registry()
    v = candidate()
    registry.apply(OLD.sign(registry.register(v)[0]))
    skipped = OLD.sign(
        replace(v, stage=Stage.PRODUCTION, approved_by="mallory", promoted_at_ms=5, updated_at_ms=5, qa_passed=True)
    )
    assert reject_reason(registry, skipped) is Reason.RULE_VIOLATION  # registered -> production
    unevaluated = OLD.sign(replace(v, stage=Stage.PRODUCTION, approved_by="x", promoted_at_ms=5, updated_at_ms=5))
    assert reject_reason(Registry(), unevaluated) is Reason.RULE_VIOLATION  # never seen, but no QA verdict


def test_the_rules_cover_gate_approval_identity_time_and_deletion() -> None:
    registry = Registry()
    current = lifecycle(registry)
    with pytest.raises(RegistryError, match="failed its QA gate"):
        check_event(None, replace(current, qa_passed=False, qa_report="accuracy 0.1"))
    with pytest.raises(RegistryError, match="explicit approval"):
        check_event(None, replace(current, approved_by=" "))
    with pytest.raises(RegistryError, match="changes labels"):
        check_event(current, replace(current, labels=("b", "a"), updated_at_ms=9))
    with pytest.raises(RegistryError, match="an old event written again"):
        check_event(current, replace(current, stage=Stage.PRODUCTION, updated_at_ms=1))
    with pytest.raises(RegistryError, match="cannot go to qa"):
        check_event(current, replace(current, stage=Stage.QA, updated_at_ms=9))
    with pytest.raises(RegistryError, match="only a qa version receives shadow"):
        check_event(None, replace(current, shadow=True))
    with pytest.raises(RegistryError, match="cannot be deleted"):
        check_removal(current)
    check_removal(None)


def test_the_cli_refuses_with_the_rule_the_worker_applies() -> None:
    registry = Registry()
    v = candidate()
    registry.apply(OLD.sign(registry.register(v)[0]))
    registry.apply(OLD.sign(registry.promote("topic", v.version, Stage.QA, actor="t", now_ms=2)[0]))
    with pytest.raises(RegistryError) as cli:
        registry.promote("topic", v.version, Stage.PRODUCTION, actor="t", now_ms=3, approved_by="ana")
    forged = OLD.sign(
        replace(
            registry.get("topic", v.version),
            stage=Stage.PRODUCTION,
            approved_by="ana",
            promoted_at_ms=3,
            updated_at_ms=3,
        )
    )
    with pytest.raises(ControlRejected) as worker:
        check_version(registry, forged, TRUSTED, DEFAULT_MAX_BYTES)
    assert str(cli.value) == str(worker.value) and "no QA evaluation" in str(cli.value)


def test_the_follower_check_decodes_checks_and_refuses_tombstones_of_production() -> None:
    registry = Registry()
    current = lifecycle(registry)
    check = control_check(CODEC, TRUSTED, DEFAULT_MAX_BYTES)
    with pytest.raises(ControlRejected) as refused:
        check(registry, current.key, None)
    assert refused.value.reason is Reason.RULE_VIOLATION
    unsigned = CODEC.encode("ModelVersion", current.unsigned().to_avro(), "t")
    with pytest.raises(ControlRejected) as refused:
        check(registry, current.key, unsigned)
    assert refused.value.reason is Reason.UNSIGNED


# --- keys from configuration -------------------------------------------------------------------


def test_the_dev_key_is_made_once_private_and_trusted_by_default(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    signer = signer_from_settings(settings)
    assert signer_from_settings(settings).key_id == signer.key_id
    private = tmp_path / "keys" / "model-signing-dev.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert signer.key_id in trusted_keys_from_settings(settings).keys
    assert "PRIVATE" not in repr(signer) and signer.key_id in repr(signer)
    assert dev_key_pair(tmp_path).public_key() == signer.private_key.public_key()


def test_configured_keys_replace_the_dev_key(tmp_path: Path) -> None:
    keys = tmp_path / "trusted"
    keys.mkdir()
    for name, signer in (("old.pem", OLD), ("new.pub", NEW)):
        public = signer.private_key.public_key()
        data = (
            public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            if name.endswith(".pem")
            else public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )
        (keys / name).write_bytes(data)
    assert set(load_trusted_keys(keys).keys) == {OLD.key_id, NEW.key_id}
    private = tmp_path / "signing.pem"
    private.write_bytes(
        NEW.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    os.chmod(private, 0o600)
    settings = Settings(data_dir=tmp_path, model_trusted_keys=keys, model_signing_key_file=private)
    assert signer_from_settings(settings).key_id == NEW.key_id
    assert set(trusted_keys_from_settings(settings).keys) == {OLD.key_id, NEW.key_id}
    assert not (tmp_path / "keys").exists(), "no dev key when keys are configured"
    with pytest.raises(SigningKeyError, match="LLMOPS_MODEL_SIGNING_KEY_FILE"):
        signer_from_settings(Settings(data_dir=tmp_path, model_trusted_keys=keys))
    (keys / "junk.pub").write_bytes(b"not a key")
    with pytest.raises(SigningKeyError, match=r"junk\.pub is neither"):
        load_trusted_keys(keys)


def test_a_signature_is_bound_to_its_namespace() -> None:
    # An event signed for a replay namespace's control topic, copied into the live one, is refused.
    v = candidate()
    TRUSTED.verify(OLD.sign(v, "r1"), "r1")
    with pytest.raises(ControlRejected) as caught:
        TRUSTED.verify(OLD.sign(v, "r1"), "")
    assert caught.value.reason is Reason.BAD_SIGNATURE
