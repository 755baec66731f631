"""CPU of one Milvus Lite upsert by batch size: why the index window is not 50 ms.

Below the maximum rate the index agent's window decides how many rows each upsert carries,
and an upsert costs a fixed amount on top of its rows (pymilvus packing, gRPC, Milvus Lite's
write-ahead log and memtable). This writes random unit vectors with 300-character texts into a
fresh Milvus Lite collection in this process (its server threads are counted: process CPU
time) and prints CPU per call and per row for each batch size. Prints JSON.

    python bench/store_write_cost.py --sizes 1 4 16 64 256
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.index.vectorstore import ChunkRow, MilvusStore  # noqa: E402
from streams.settings import Settings  # noqa: E402


def rows(count: int, batch: int, rng: np.random.Generator) -> list[ChunkRow]:
    vectors = rng.standard_normal((count, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        ChunkRow(
            chunk_id=f"d{batch}-{i}#0",
            doc_id=f"d{batch}-{i}",
            chunk_index=0,
            tenant="",
            text="some words of a chunk " * 14,
            title="title",
            source="bench",
            content_hash="h",
            raw_timestamp_ms=0,
            indexed_at_ms=0,
            vector=vector.tolist(),
        )
        for i, vector in enumerate(vectors)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    parser.add_argument("--rows", type=int, default=512, help="rows written per batch size (at least 4 calls)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="store-write-cost-")), namespace="bench")
    store = MilvusStore.from_settings(settings, "0" * 64)
    store.upsert(rows(8, -1, rng))  # the first write opens segments and files
    results, batch = [], 0
    try:
        for size in args.sizes:
            batches = []
            for _ in range(max(4, args.rows // size)):
                batch += 1
                batches.append(rows(size, batch, rng))
            started = time.process_time()
            for written in batches:
                store.upsert(written)
            cpu_ms = 1000 * (time.process_time() - started)
            calls = len(batches)
            results.append(
                {
                    "rows_per_call": size,
                    "cpu_ms_per_call": round(cpu_ms / calls, 2),
                    "cpu_ms_per_row": round(cpu_ms / (calls * size), 3),
                }
            )
    finally:
        store.close()
    print(json.dumps({"benchmark": "store_write_cost", "results": results}, indent=2))


if __name__ == "__main__":
    main()
