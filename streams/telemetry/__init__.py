"""Telemetry: OpenTelemetry tracing across Kafka hops, span export, and reading a trace back.

What lives here:
    ``tracing`` (spans, W3C trace context in Kafka headers), ``span_export`` (OTLP protobuf to
    ``telemetry.spans`` and OTLP/HTTP), ``traceview`` (``llmops trace``: one trace from the topic),
    ``metrics`` (Prometheus metrics) and ``endpoints`` (a worker's ``/healthz``, ``/readyz``, ``/metrics``).

May import:
    ``streams.kafka`` and the top-level contracts only. ``make lint`` checks it.
"""
