"""Index: embedding chunks with ONNX Runtime, writing them to Milvus, and searching them.

What lives here:
    ``packaged_models`` (where the model files that PyPI packages ship are), ``embedder_build``
    (the fp32 and int8 graphs built from them), ``embed`` (the ONNX embedder and its version),
    ``indexing`` (micro-batched embedding and idempotent writes), ``vectorstore`` (the Milvus
    store behind a small protocol), ``search``, ``milvus_server`` (Milvus Lite served as a server).

May import:
    ``streams.ingest`` (the tokenizer), ``streams.telemetry``, ``streams.kafka`` and the top-level
    contracts; never models, inference, monitor, replay or cli. ``make lint`` checks it.
"""
