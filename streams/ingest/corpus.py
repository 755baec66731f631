"""A real corpus on every machine: documents from the docstrings of Python's standard library.

Why this exists:
    Demos, tests and benchmarks need real text without downloads. The standard library ships
    thousands of docstrings in good English, with a natural label (the top-level module) for
    classification and slices for monitoring. Files are parsed with :mod:`ast`, never imported,
    so nothing runs.

Each document is one module, class or function docstring:
    ``{"id": "stdlib:json.decoder.JSONDecoder.decode", "text": ..., "title": "json.decoder.JSONDecoder.decode",
    "source": "stdlib", "metadata": {"module": "json.decoder", "top_level": "json", "kind": "function"}}``
"""

from __future__ import annotations

import ast
import json
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

# Tests, demos and GUI/IDE sources are not library documentation.
_SKIPPED_PARTS = frozenset(
    {
        "test",
        "tests",
        "idlelib",
        "lib2to3",
        "turtledemo",
        "site-packages",
        "dist-packages",
        "__pycache__",
        "ensurepip",
        "venv",
        "pydoc_data",
    }
)
MIN_DOCSTRING_CHARS = 40


def stdlib_dir() -> Path:
    """Folder of the running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _docstrings(tree: ast.Module, module: str) -> Iterator[tuple[str, str, str]]:
    """(qualified name, kind, docstring) for the module and its classes and functions."""
    doc = ast.get_docstring(tree)
    if doc:
        yield module, "module", doc

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, str, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}.{child.name}"
                kind = "class" if isinstance(child, ast.ClassDef) else "function"
                text = ast.get_docstring(child)
                if text:
                    yield name, kind, text
                if isinstance(child, ast.ClassDef):
                    yield from walk(child, name)

    yield from walk(tree, module)


def stdlib_documents(root: Path | None = None, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Documents from the standard library's docstrings, in a stable order."""
    root = root or stdlib_dir()
    count = 0
    seen: set[str] = set()
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).parts
        if any(part in _SKIPPED_PARTS or part.startswith(("test_", "_test")) for part in relative):
            continue
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError):
            continue
        module = _module_name(path, root)
        for name, kind, text in _docstrings(tree, module):
            doc_id = f"stdlib:{name}"
            if len(text) < MIN_DOCSTRING_CHARS or doc_id in seen:
                continue
            seen.add(doc_id)
            yield {
                "id": doc_id,
                "text": text,
                "title": name,
                "source": "stdlib",
                "metadata": {"module": module, "top_level": module.split(".")[0], "kind": kind},
            }
            count += 1
            if limit is not None and count >= limit:
                return


def read_jsonl(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line bytes) of a JSONL file, blank lines skipped; bytes are sent as-is."""
    with open(path, "rb") as handle:
        yield from jsonl_lines(handle)


def jsonl_lines(handle: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line bytes) of JSONL from any binary stream (a file, stdin), blank lines skipped."""
    for number, line in enumerate(handle, start=1):
        stripped = line.strip()
        if stripped:
            yield number, stripped


def line_problem(raw: bytes) -> str | None:
    """Why a JSONL line cannot be a document (not JSON, or not an object), or None; never quotes it."""
    try:
        obj = json.loads(raw)
    except UnicodeDecodeError:
        return "not UTF-8"
    except json.JSONDecodeError as error:
        return f"not JSON ({error.msg} at column {error.colno})"
    except RecursionError:
        return "not JSON (nested too deeply)"
    return None if isinstance(obj, dict) else f"a JSON {type(obj).__name__}, not an object"


def document_key(raw: bytes) -> bytes | None:
    """The Kafka key of a JSON document line: its id, or None when it has none."""
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return None
    doc_id = obj.get("id") if isinstance(obj, dict) else None
    return doc_id.encode("utf-8", "surrogatepass") if isinstance(doc_id, str) else None
