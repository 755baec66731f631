"""Monitor: online drift, quality, fairness, latency and cost per window, and the alerts they raise.

What lives here:
    ``config`` (the monitor's settings, metrics and streams), ``windows`` (tumbling windows and
    the TTL table of the feedback join), ``drift`` (the statistics), ``detectors`` (drift,
    accuracy and response metrics of a closed window, against a ``Reference``), ``alerts`` (one
    incident = one FIRING and one RESOLVED event), ``monitor`` (the ``Monitor`` the agent feeds),
    ``text_features``, ``reference`` (building, storing and loading references), ``status`` and
    ``report`` (what ``llmops monitor`` prints and plots), ``otel`` (metrics as OpenTelemetry).

May import:
    ``streams.inference`` (the request contract it observes), ``streams.models``,
    ``streams.index``, ``streams.ingest``, ``streams.telemetry``, ``streams.kafka`` and the
    top-level contracts; never replay or cli.
    ``make lint`` checks it.
"""
