"""Dead letters always fit in a Kafka message, whatever they reject."""

from streams.kafka.avro import AvroCodec, EmbeddedRegistry
from streams.records import MAX_DEAD_LETTER_BYTES, DeadLetter, SourceCoordinates

SOURCE = SourceCoordinates("docs.raw", 2, 41, 1_700_000_000_000)
CODEC = AvroCodec(EmbeddedRegistry.from_directory())


def letter(key: bytes | None, value: bytes | None) -> DeadLetter:
    return DeadLetter.of(SOURCE, key, value, stage="ingest", reason="VALUE_TOO_LARGE", detail="too big", now_ms=1)


def test_small_records_are_kept_byte_for_byte() -> None:
    dead = letter(b"k", b"v" * 1000)
    assert (dead.key, dead.value, dead.detail) == (b"k", b"v" * 1000, "too big")


def test_a_record_at_the_producer_limit_is_cut_and_says_where_the_whole_one_is() -> None:
    dead = letter(b"key", b"x" * 1_048_000)
    assert dead.key == b"key" and dead.value == b"x" * (MAX_DEAD_LETTER_BYTES - 3)
    assert "cut to their first 524288 of 1048003 bytes" in dead.detail and "docs.raw:2:41" in dead.detail
    assert len(CODEC.encode("DeadLetter", dead.to_avro(), "deadletter")) < 600_000


def test_a_huge_key_is_cut_too_and_a_huge_detail_is_bounded() -> None:
    dead = DeadLetter.of(SOURCE, b"k" * 2_000_000, None, stage="s", reason="R", detail="d" * 100_000, now_ms=1)
    assert dead.key == b"k" * MAX_DEAD_LETTER_BYTES and dead.value is None
    assert len(dead.detail) < 5000
