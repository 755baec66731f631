"""Replay: copy a topic range into a namespace of its own, run it, and prove the result reproducible.

What lives here:
    ``runner`` (range, copy, seeded registry, a supervised worker, the manifest), ``diff``
    (compare a replay with its source and explain the differences).

May import:
    every capability below it (monitor, inference, models, index, ingest, telemetry, kafka) and
    the top-level contracts; never cli. ``make lint`` checks it.
"""
