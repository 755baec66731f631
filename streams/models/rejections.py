"""Why a model control event or artifact was refused: one reason code per failed check.

Why this exists:
    Workers check every ``models.control`` event themselves (signature, digests, the ONNX graph,
    the lifecycle rules) and the CLI runs the same checks before it writes. A refusal carries a
    machine-readable reason code (the dead letter's ``reason``) and a sentence that says what to
    do next (its ``detail``), so the checks in ``signing``, ``artifacts`` and ``rules`` raise one
    exception type that both sides understand.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Any


class Reason(StrEnum):
    """Reason codes of refused control events (the ``reason`` of their dead letters)."""

    MALFORMED = "MALFORMED"  # not a ModelVersion record, or its key does not name it
    UNSIGNED = "UNSIGNED"  # no signature at all
    UNKNOWN_KEY = "UNKNOWN_KEY"  # signed by a key this worker does not trust
    BAD_SIGNATURE = "BAD_SIGNATURE"  # the signature does not match the record
    DIGEST_MISMATCH = "DIGEST_MISMATCH"  # artifact bytes, file digests and version id disagree
    EXTERNAL_DATA = "EXTERNAL_DATA"  # the ONNX graph references files outside its own bytes
    TOO_LARGE = "TOO_LARGE"  # the artifact is above LLMOPS_MODEL_MAX_BYTES
    RULE_VIOLATION = "RULE_VIOLATION"  # a lifecycle rule (QA gate, approval, stage transition) is broken
    LOAD_FAILED = "LOAD_FAILED"  # the checks passed but ONNX Runtime could not load the graph


class RegistryError(ValueError):
    """A registry operation that the lifecycle does not allow; the message says what would."""


class ControlRejected(ValueError):
    """A control event or artifact that must not be applied; ``reason`` is a :class:`Reason`.

    The message is ``detail`` alone (what the CLI prints); logs and dead letters carry the reason.
    """

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class RuleViolation(ControlRejected, RegistryError):
    """A lifecycle rule refused an event: a CLI command and a worker refuse it the same way."""

    def __init__(self, detail: str) -> None:
        super().__init__(Reason.RULE_VIOLATION, detail)


ALERT_METRIC = "models.control.rejected"
ALERT_METHOD = (
    "worker-side check of each models.control event: signature by a trusted key, artifact sha256, "
    "self-contained ONNX under the size cap, lifecycle rules"
)


def rejection_alert(
    rejected: ControlRejected, key: str, coordinates: str, record_ms: int, now_ms: int
) -> dict[str, Any]:
    """An ``Alert`` record (monitor.alerts) for one refused control event: critical, FIRING only.

    Each refusal is its own incident (id from the record's coordinates, so a worker restart that
    refuses the same record again repeats the same id); there is no RESOLVED event: a refused event
    changes nothing, and the incident ends when someone has looked at the dead letter.
    """
    return {
        "alert_id": hashlib.sha256(f"{ALERT_METRIC}|{coordinates}".encode()).hexdigest()[:16],
        "state": "FIRING",
        "severity": "critical",
        "metric": ALERT_METRIC,
        "slice": f"model={key}",
        "value": 1.0,
        "threshold": 0.0,
        "direction": "above",
        "window_id": coordinates,
        "window_start_ms": record_ms,
        "window_end_ms": record_ms,
        "breaches": 1,
        "method": ALERT_METHOD,
        "hint": (
            f"{rejected.reason.value}: {rejected.detail[:300]} The active models did not change; the record is on "
            "the deadletter topic. Who can write models.control? (only the model manager should: llmops kafka acls)"
        ),
        "created_at_ms": now_ms,
    }
