"""Inference: requests and replies over Kafka, prompt-injection safety, and feedback.

What lives here:
    ``service`` (parse and check requests, answer them from an immutable model snapshot),
    ``client`` (``InferenceClient``, the request/reply client applications use), ``safety``
    (the prompt-injection screen), ``feedback`` (human feedback records).

May import:
    ``streams.models``, ``streams.index``, ``streams.ingest``, ``streams.telemetry``,
    ``streams.kafka`` and the top-level contracts; never monitor (which observes it), replay
    or cli. ``make lint`` checks it.
"""
