"""Kafka: the embedded broker, its security, topics, admin, ACLs, clients and the Avro codec.

What lives here:
    ``broker`` (the embedded KRaft broker resolved from Maven Central), ``security`` (SASL/TLS
    settings for the broker and every client), ``broker_wait``, ``topics`` (every topic name and
    its namespace prefix, defined once), ``admin`` (topic creation, offsets, reading ranges),
    ``acls`` (the grants each agent group needs), ``rdkafka`` and ``commit_offsets`` (the
    librdkafka clients of the request/reply path), ``avro`` (Confluent-framed Avro and the schema
    registry), ``progress`` (waiting until consumer groups have committed their input).

May import:
    only the top-level contracts (``streams.settings``, ``streams.records``, ``streams.logs``,
    ``streams.runtime``). Every other subpackage builds on this one; ``make lint`` checks it.
"""
