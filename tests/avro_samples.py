"""An older version of a schema and what its records read as today, shared by the Avro tests."""

RAW_V1 = {  # an older RawDocument: no tenant, metadata or deleted fields
    "type": "record",
    "name": "RawDocument",
    "namespace": "llmops.streams",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "text", "type": ["null", "string"], "default": None},
        {"name": "title", "type": ["null", "string"], "default": None},
        {"name": "source", "type": ["null", "string"], "default": None},
    ],
}
RAW_V1_RECORD = {"id": "old", "text": "from v1"}
RAW_V1_BODY = b"\x06old\x02\x0efrom v1\x00\x00"  # RAW_V1_RECORD written with RAW_V1
# RAW_V1_RECORD read with the current RawDocument schema: the newer fields take their defaults.
RAW_V1_AS_CURRENT = {
    "id": "old",
    "text": "from v1",
    "title": None,
    "source": None,
    "tenant": None,
    "metadata": {},
    "deleted": False,
}
