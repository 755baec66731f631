"""Models: the registry of model versions on ``models.control``, their lifecycle, and training.

What lives here:
    ``registry`` (stages, the lifecycle rules and the follower of the compacted control topic),
    ``lifecycle`` (train, register, evaluate against the QA gate, approve, promote, roll back),
    ``classifier`` (skl2onnx classifier heads over the embedder, with explanations).

May import:
    ``streams.index``, ``streams.ingest``, ``streams.telemetry``, ``streams.kafka`` and the
    top-level contracts; never inference, monitor, replay or cli. ``make lint`` checks it.
"""
