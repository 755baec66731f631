"""Ingest: records in, validated, cleaned, redacted, deduplicated and chunked; corpora and profiling.

What lives here:
    ``validate`` (raw bytes to a ``RawDocument`` or a rejection), ``clean``, ``redact`` (PII),
    ``dedup`` (exact and near duplicates), ``chunk`` (token chunks), ``pipeline`` (the pure
    batch pipeline the ingest agent calls), ``corpus`` (the built-in stdlib corpus), ``publish``
    (upstream JSON documents to ``docs.raw``), ``profile`` (data exploration of a file or topic).

May import:
    ``streams.kafka``, ``streams.telemetry`` and the top-level contracts; never a package above it
    (index, models, inference, monitor, replay, cli). ``make lint`` checks it.
"""
