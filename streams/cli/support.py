"""Helpers every ``llmops`` command uses: settings with a readable error, JSON output, async runs."""

from __future__ import annotations

import json
from typing import Any

import click

from streams.settings import Settings


def load_settings() -> Settings:
    """Settings from LLMOPS_* variables; a validation error becomes a clear CLI error."""
    try:
        return Settings()
    except Exception as error:  # noqa: BLE001 - pydantic's ValidationError, shown to the user as-is
        raise click.ClickException(f"invalid LLMOPS_* settings:\n{error}") from None


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))
