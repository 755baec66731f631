"""Helpers every ``llmops`` command uses: settings with a readable error, JSON output, async runs."""

from __future__ import annotations

import json
from typing import Any

import click
from pydantic import ValidationError
from pydantic_settings import SettingsError

from streams.settings import Settings, describe_settings_error


def load_settings() -> Settings:
    """Settings from LLMOPS_* variables; a validation error becomes a clear CLI error.

    The error names each bad setting and the kind of error, never the value given: a secret
    set in the wrong variable must not reach a terminal or a CI log.
    """
    try:
        return Settings()
    except (ValidationError, SettingsError) as error:
        raise click.ClickException(
            "invalid LLMOPS_* settings (environment or .env):\n"
            f"{describe_settings_error(error)}\n"
            "fix these variables; docs/operations.md lists every setting with its allowed values"
        ) from None


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))
