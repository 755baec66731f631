"""The monitoring half of ``llmops demo``: a reference before the worker starts, a status after.

Why this exists:
    ``make run`` should end by showing what the monitor saw of the demo's documents and
    questions (rates, drift against the stdlib reference, latency SLOs, alerts), the view
    ``llmops monitor status --once`` gives. Kept apart so demo.py only calls two functions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from streams.monitor.reference import load_reference, set_stdlib_reference
from streams.monitor.status import monitor_status
from streams.settings import Settings


def prepare_monitor(settings: Settings, log: Callable[[str], None]) -> None:
    """Store a stdlib reference (the whole corpus, which the demo publishes) unless one is set."""
    reference = asyncio.run(load_reference(settings))
    if reference is None:
        log("setting the monitor's drift reference from the stdlib corpus...")
        reference = set_stdlib_reference(settings, split="all")
    log(f"monitor reference {reference.reference_id} ({reference.description})")


def monitor_summary(settings: Settings) -> dict[str, Any]:
    """What ``llmops monitor status --json`` prints."""
    return asyncio.run(monitor_status(settings))


def print_monitor(status: dict[str, Any]) -> None:
    from rich.console import Console

    from streams.cli.monitor import render_status

    Console().print(render_status(status))
