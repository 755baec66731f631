"""llmops-streams: the library behind the agents, one subpackage per capability.

Layout (dependencies point down this list, never up; ``make lint`` checks it with import-linter):
    ``cli``        the ``llmops`` command and the demo
    ``replay``     topic replay into a namespace, manifests and diffs
    ``monitor``    drift, quality and alerts (it observes inference)
    ``inference``  request/reply, safety, feedback
    ``models``     the registry on ``models.control``, lifecycle, classifier heads
    ``index``      embedding, Milvus, search
    ``ingest``     validation, cleaning, redaction, dedup, chunking, publishing, profiling
    ``telemetry``  tracing and span export
    ``kafka``      the broker, topics, admin, ACLs, clients, Avro
    top level      shared contracts: ``settings``, ``records``, ``logs``, ``runtime``, ``heap``,
                   ``worker_process``, ``packages``
"""

__version__ = "0.1.0"
