"""The model lifecycle rules, once: what a ``models.control`` event may say, given the state before it.

Why this exists:
    The CLI used to enforce the lifecycle (QA gate passed, approval present, allowed stage
    transitions) while workers applied whatever they read. These pure functions are the only copy
    of the rules: :class:`streams.models.registry.Registry` runs them on every event it produces
    (so ``llmops models promote`` refuses with their message), ``write_events`` runs them before
    writing, and every worker's follower runs them on every event it reads, against the registry
    it has built, before applying it.

The rules:
    - stages: registered -> qa -> production -> archived; qa -> registered (demote);
      archived -> production (rollback); a stage may also repeat (an evaluation, a re-signature);
    - a production version needs an explicit approver and a promotion time, and a classifier,
      ranker or index version also a passed QA evaluation; only a qa version shadows production traffic;
    - what identifies a version never changes: its kind, files, labels, embedder, artifact, uri;
    - events of one version never go back in time (an old, validly signed event replayed later
      is refused);
    - a production version is not deleted (a tombstone): roll back or promote another first.

    Compaction keeps only the latest event of each version, so a version a worker has not seen
    before may arrive in any stage: then only the rules on the event itself apply (the signature
    check, done before these rules, is what vouches for its history).

Usage:
    >>> check_event(registry.find(event.key), event)     # raises RuleViolation
    >>> check_removal(registry.find(key))
"""

from __future__ import annotations

from streams.models.rejections import RuleViolation
from streams.models.version import GATED_KINDS, ModelVersion, Stage

ALLOWED_STAGES: dict[Stage, frozenset[Stage]] = {
    Stage.REGISTERED: frozenset({Stage.REGISTERED, Stage.QA}),
    Stage.QA: frozenset({Stage.QA, Stage.REGISTERED, Stage.PRODUCTION}),
    Stage.PRODUCTION: frozenset({Stage.PRODUCTION, Stage.ARCHIVED}),
    Stage.ARCHIVED: frozenset({Stage.ARCHIVED, Stage.PRODUCTION}),
}
IDENTITY_FIELDS = ("kind", "files", "labels", "embedder_version", "artifact", "uri")


def check_state(event: ModelVersion) -> None:
    """The rules an event must meet on its own (whatever came before it)."""
    if event.stage is Stage.PRODUCTION:
        if event.kind in GATED_KINDS:
            if event.qa_passed is None:
                raise RuleViolation(f"{event.short} has no QA evaluation; run `llmops models evaluate {event.short}`")
            if not event.qa_passed:
                raise RuleViolation(f"{event.short} failed its QA gate: {event.qa_report}")
        if not event.approved_by or not event.approved_by.strip():
            raise RuleViolation("promotion to production needs an explicit approval: --approved-by NAME")
        if event.promoted_at_ms is None:
            raise RuleViolation(f"{event.short} is in production without a promotion time")
    if event.shadow and event.stage is not Stage.QA:
        raise RuleViolation(f"{event.short} is {event.stage}; only a qa version receives shadow traffic")


def check_event(previous: ModelVersion | None, event: ModelVersion) -> None:
    """Whether ``event`` may follow ``previous`` (the version's state so far, None if unseen).

    Raises:
        RuleViolation: with what the operator should do instead.
    """
    check_state(event)
    if previous is None:
        return
    if previous.key != event.key:
        raise RuleViolation(f"{event.short} cannot follow {previous.short}: they are different versions")
    changed = [name for name in IDENTITY_FIELDS if getattr(previous, name) != getattr(event, name)]
    if changed:
        raise RuleViolation(
            f"{event.short} changes {', '.join(changed)} of a registered version; different files are a "
            "different version: register them as one"
        )
    if event.updated_at_ms < previous.updated_at_ms:
        raise RuleViolation(
            f"{event.short} is dated {event.updated_at_ms}, before its current state ({previous.updated_at_ms}): "
            "an old event written again is not applied"
        )
    if event.stage not in ALLOWED_STAGES[previous.stage]:
        hint = {
            Stage.REGISTERED: (
                f"promote it to qa and evaluate it first (`llmops models promote {event.short} --to qa`, "
                "then `llmops models evaluate`)"
            ),
            Stage.PRODUCTION: "archive it by promoting another version or rolling back",
            Stage.ARCHIVED: "an archived version returns to production only (by rollback)",
            Stage.QA: "only a registered version goes to qa",
        }[previous.stage]
        raise RuleViolation(f"{event.short} is {previous.stage}; it cannot go to {event.stage}: {hint}")


def check_production(current: ModelVersion | None, event: ModelVersion) -> None:
    """Whether ``event`` may put its version into production while ``current`` answers.

    A production event older than the current production version's state is stale: a replayed
    old event (for example of a version deleted since, whose history the worker no longer has)
    must not take production back from a later promotion or rollback.
    """
    if (
        event.stage is Stage.PRODUCTION
        and current is not None
        and current.key != event.key
        and event.updated_at_ms <= current.updated_at_ms
    ):
        raise RuleViolation(
            f"{event.short} is dated {event.updated_at_ms}, not after {current.short}, in production since "
            f"{current.updated_at_ms}: a stale event; promote it again to put it in production"
        )


def check_removal(previous: ModelVersion | None) -> None:
    """Whether a tombstone may delete ``previous`` (never the production version)."""
    if previous is not None and previous.stage is Stage.PRODUCTION:
        raise RuleViolation(
            f"{previous.short} is in production and cannot be deleted; roll back or promote another version first"
        )
