"""CPU per chunk of each pipeline stage in one process, without Kafka: where a chunk's CPU goes.

The same functions the agents call (ingest pipeline, Avro codec, ONNX embedder, Milvus Lite
writes) on N stdlib documents, each step timed by process CPU time (less sensitive to busy
neighbours than wall time). Compare with the workers' CPU in bench/pipeline_throughput.py: the
difference is what Faust, Kafka clients, tracing and contention add. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.index.embed import OnnxEmbedder  # noqa: E402
from streams.index.indexing import apply_embeddings, embed_chunks  # noqa: E402
from streams.index.vectorstore import MilvusStore  # noqa: E402
from streams.ingest.chunk import default_tokenizer, default_tokenizer_path  # noqa: E402
from streams.ingest.corpus import stdlib_documents  # noqa: E402
from streams.ingest.dedup import LookupIndex  # noqa: E402
from streams.ingest.pipeline import IngestConfig, IngestPipeline, IngestRecord, encode_outputs  # noqa: E402
from streams.ingest.publish import encode_document  # noqa: E402
from streams.kafka.avro import codec_from_settings  # noqa: E402
from streams.kafka.topics import Topics  # noqa: E402
from streams.records import SourceCoordinates  # noqa: E402
from streams.settings import Settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=2000)
    args = parser.parse_args()
    settings = Settings()
    codec = codec_from_settings(settings)
    topics = Topics("bench")
    raw = [encode_document(d) for d in stdlib_documents(limit=args.docs)]
    records = [IngestRecord(k, v, SourceCoordinates(topics.docs_raw, 0, i, 1000 + i)) for i, (k, v) in enumerate(raw)]
    steps: dict[str, float] = {}

    def timed(name: str, work: Callable[[], Any]) -> Any:
        started = time.process_time()
        result = work()
        steps[name] = time.process_time() - started
        return result

    pipeline = IngestPipeline(IngestConfig.from_settings(settings), codec, default_tokenizer())
    store: dict[str, Any] = {}
    lookups = LookupIndex.build(store.items(), settings.near_dup_max_hamming, settings.near_dup_enabled)
    batches = [records[i : i + settings.ingest_batch_size] for i in range(0, len(records), settings.ingest_batch_size)]
    results = timed("ingest", lambda: [r for b in batches for r in pipeline.process_batch(b, store, lookups)])
    outputs = timed(
        "ingest_encode",
        lambda: [o for r, x in zip(results, records, strict=True) for o in encode_outputs(r, x, codec, topics)],
    )
    clean = [o.value for o in outputs if o.topic == topics.docs_clean]
    chunks = timed("embed_decode", lambda: [codec.decode(v, "CleanChunk") for v in clean])
    embedder = OnnxEmbedder.from_settings(settings)
    embedder.embed(["warm-up"] * embedder.workers)
    size = settings.embed_batch_size
    texts = [c["text"] for c in chunks if c["op"] == "UPSERT"]
    tokenizer = Tokenizer.from_file(str(default_tokenizer_path()))  # as the embedder loads it
    tokenizer.enable_truncation(128)
    timed("embed_tokenize", lambda: [tokenizer.encode_batch(texts[i : i + size]) for i in range(0, len(texts), size)])
    embedded = timed(
        "embed_onnx",
        lambda: [r for i in range(0, len(chunks), size) for r in embed_chunks(chunks[i : i + size], embedder)],
    )
    encoded = timed(
        "embed_encode", lambda: [codec.encode("ChunkEmbedding", r, topics.docs_embeddings) for r in embedded]
    )
    decoded = timed("index_decode", lambda: [codec.decode(v, "ChunkEmbedding") for v in encoded])
    with tempfile.TemporaryDirectory(prefix="stage-cpu-") as scratch:
        milvus = MilvusStore(str(Path(scratch) / "milvus.db"), "bench", embedder.dimension)
        try:
            size = settings.index_batch_size
            timed(
                "index_upsert",
                lambda: [
                    apply_embeddings(decoded[i : i + size], milvus, embedder.version)
                    for i in range(0, len(decoded), size)
                ],
            )
            timed("index_flush", milvus.flush)
        finally:
            milvus.close()
    count = len(texts)
    report = {
        "benchmark": "stage_cpu",
        "docs": len(records),
        "chunks": count,
        "cpu_ms_per_chunk": {name: round(1000 * seconds / count, 3) for name, seconds in steps.items()},
        "note": "embed_onnx includes tokenizing (embed_tokenize is that part alone)",
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
