"""Helpers every ``llmops`` command uses: settings, Kafka connection flags, JSON output, exit codes.

Why this exists:
    Settings come from three places, in this order of precedence: command-line flags, then
    ``LLMOPS_*`` variables (and ``.env``), then defaults. The Kafka flags that Kafka's own tools
    take (``-b/--bootstrap-server`` and ``--command-config FILE``) are declared once here
    (:func:`kafka_options`) and read by :func:`load_settings`, so every command that talks to
    Kafka takes them the same way, and no command body handles them.

Usage:
    >>> @click.command()
    ... @kafka_options
    ... def topics() -> None:
    ...     settings = load_settings()      # flags over LLMOPS_* over defaults
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError
from pydantic_settings import SettingsError

from streams.settings import Settings, describe_settings_error

# Exit codes (docs/cli.md, "Exit codes").
EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran and failed, and says why
EXIT_USAGE = 2  # a wrong flag, setting or --command-config key: change what the message names
EXIT_NOT_READY = 3  # Kafka (or the pipeline) cannot be reached or did not answer in time
EXIT_REFUSED = 4  # Kafka refused the credentials or an ACL refused the operation

_OVERRIDES = "llmops.kafka_overrides"
_loaded: list[Settings] = []
F = TypeVar("F", bound=Callable[..., Any])


class ConfigurationError(click.ClickException):
    """A setting, flag or --command-config key cannot be used: exit 2, naming what to change."""

    exit_code = EXIT_USAGE


class NotReady(click.ClickException):
    """Kafka or the pipeline could not be reached, or did not answer in time: exit 3."""

    exit_code = EXIT_NOT_READY


class Refused(click.ClickException):
    """Kafka refused the credentials or an operation (ACL): exit 4."""

    exit_code = EXIT_REFUSED


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None:
        ctx.meta.setdefault(_OVERRIDES, {})[param.name] = value
    return value


def kafka_options(command: F) -> F:
    """The Kafka connection flags of Kafka's own tools, for a command that talks to Kafka."""
    command = click.option(
        "--command-config",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        expose_value=False,
        callback=_remember,
        metavar="FILE",
        help="Kafka client.properties (Java keys as kafka-console-producer takes, or librdkafka keys as "
        "kcat -F takes): security.protocol, sasl.*, ssl.*; wins over LLMOPS_* variables.",
    )(command)
    command = click.option(
        "-b",
        "--bootstrap-server",
        expose_value=False,
        callback=_remember,
        metavar="HOST:PORT[,...]",
        help="Kafka brokers; wins over bootstrap.servers in --command-config and LLMOPS_BOOTSTRAP_SERVERS.",
    )(command)
    return command


def _flag_overrides(defaults: Settings, flags: dict[str, Any]) -> dict[str, Any]:
    from streams.kafka.client_properties import PropertiesError, settings_from_properties

    overrides: dict[str, Any] = {}
    if "command_config" in flags:
        try:
            overrides, ignored = settings_from_properties(flags["command_config"], defaults.data_dir / "client-config")
        except PropertiesError as error:
            raise ConfigurationError(str(error)) from None
        if ignored:
            click.echo(f"--command-config: client tuning key(s) not used here: {', '.join(ignored)}", err=True)
    if "bootstrap_server" in flags:
        overrides["bootstrap_servers"] = flags["bootstrap_server"]
    return overrides


def load_settings() -> Settings:
    """Settings from this command's flags, then LLMOPS_* variables, then defaults.

    A validation error becomes a clear CLI error (exit 2) that names each bad setting and the kind
    of error, never the value given: a secret set in the wrong variable must not reach a terminal
    or a CI log.
    """
    context = click.get_current_context(silent=True)
    flags: dict[str, Any] = context.meta.get(_OVERRIDES, {}) if context is not None else {}
    try:
        settings = Settings()
        if flags:
            settings = Settings(**_flag_overrides(settings, flags))
    except (ValidationError, SettingsError) as error:
        problems = describe_settings_error(error)
        if "bootstrap_server" in flags:  # the flag set it: name the flag first
            problems = problems.replace(
                "LLMOPS_BOOTSTRAP_SERVERS:", "-b/--bootstrap-server (LLMOPS_BOOTSTRAP_SERVERS):"
            )
        raise ConfigurationError(
            "invalid settings (LLMOPS_* environment, .env"
            + (", or the -b/--command-config flags" if flags else "")
            + f"):\n{problems}\n"
            "fix these; docs/operations.md lists every setting with its allowed values"
        ) from None
    _loaded.append(settings)
    return settings


def last_settings() -> Settings:
    """The settings the running command loaded last (for an error message after it failed)."""
    return _loaded[-1] if _loaded else load_settings()


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))
