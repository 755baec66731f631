"""The CLI as Kafka users and scripts expect it (click's CliRunner, no broker): every command that
talks to Kafka takes -b and --command-config, flags win over LLMOPS_* which win over defaults,
results come as --json, and exit codes say what went wrong (docs/cli.md)."""

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from streams.cli.main import cli
from streams.cli.support import (
    EXIT_NOT_READY,
    EXIT_USAGE,
    kafka_options,
    load_settings,
)

# Commands that print no result of their own: `worker` and `generator serve` run until stopped.
NO_RESULT = {"worker", "generator serve"}
# Commands that never talk to Kafka: `kafka stop` signals a local process, `search` and `index migrate`
# read Milvus, `generator serve` runs a local model server.
NO_KAFKA = {"kafka stop", "search", "index migrate", "generator serve"}


def leaf_commands(group: click.Group = cli, prefix: str = "") -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            found.update(leaf_commands(command, path + " "))
        else:
            found[path] = command
    return found


def option_names(command: click.Command) -> set[str]:
    return {opt for param in command.params for opt in getattr(param, "opts", [])}


def test_every_command_that_talks_to_kafka_takes_the_kafka_tools_flags() -> None:
    commands = leaf_commands()
    assert len(commands) >= 25
    missing = [
        name
        for name, command in commands.items()
        if name not in NO_KAFKA and not {"-b", "--bootstrap-server", "--command-config"} <= option_names(command)
    ]
    assert missing == []


def test_every_command_that_prints_a_result_takes_json() -> None:
    missing = [
        name
        for name, command in leaf_commands().items()
        if name not in NO_RESULT and "--json" not in option_names(command)
    ]
    assert missing == []


@click.command()
@kafka_options
def show() -> None:
    settings = load_settings()
    click.echo(json.dumps({"bootstrap": settings.bootstrap_servers, "protocol": settings.security_protocol}))


def test_flags_win_over_the_environment_which_wins_over_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    runner = CliRunner()
    assert json.loads(runner.invoke(show, []).output)["bootstrap"] == "127.0.0.1:9092"
    monkeypatch.setenv("LLMOPS_BOOTSTRAP_SERVERS", "env:1")
    monkeypatch.setenv("LLMOPS_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("LLMOPS_SASL_MECHANISM", "PLAIN")
    assert json.loads(runner.invoke(show, []).output) == {"bootstrap": "env:1", "protocol": "SASL_PLAINTEXT"}
    config = tmp_path / "client.properties"
    config.write_text("bootstrap.servers=file:2\nsecurity.protocol=PLAINTEXT\n")
    assert json.loads(runner.invoke(show, ["--command-config", str(config)]).output) == {
        "bootstrap": "file:2",
        "protocol": "PLAINTEXT",
    }
    result = runner.invoke(show, ["--command-config", str(config), "-b", "flag:3"])
    assert json.loads(result.output)["bootstrap"] == "flag:3"
    assert json.loads(runner.invoke(show, ["--bootstrap-server", "flag:4"]).output)["bootstrap"] == "flag:4"


def test_a_bad_command_config_is_a_usage_error_naming_the_key_never_the_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "client.properties"
    config.write_text("security.protocol=SASL_SSL\nsasl.mechanism=GSSAPI\nssl.keystore.password=hunter2-secret\n")
    result = CliRunner().invoke(cli, ["kafka", "topics", "--command-config", str(config)])
    assert result.exit_code == EXIT_USAGE, result.output
    assert "LLMOPS_SASL_MECHANISM" in result.output and "--command-config" in result.output
    assert "hunter2-secret" not in result.output
    config.write_text("sasl.jaas.config=nonsense\n")
    result = CliRunner().invoke(cli, ["publish", "-", "--command-config", str(config)], input="{}\n")
    assert result.exit_code == EXIT_USAGE and "sasl.jaas.config" in result.output, result.output


def test_usage_errors_exit_2() -> None:
    runner = CliRunner()
    for bad in ("kafka-1", "kafka-1:x", ":9092", "kafka-1:9092,kafka-2:0"):
        result = runner.invoke(cli, ["kafka", "topics", "-b", bad])
        assert result.exit_code == EXIT_USAGE and "-b/--bootstrap-server" in result.output, result.output
    assert runner.invoke(cli, ["publish"]).exit_code == EXIT_USAGE
    assert runner.invoke(cli, ["kafka", "topics", "--no-such-flag"]).exit_code == EXIT_USAGE
    assert runner.invoke(cli, ["trace", "not-hex"]).exit_code == EXIT_USAGE


def test_a_broker_nobody_runs_is_not_ready_exit_3_naming_the_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["kafka", "topics", "-b", "127.0.0.1:1", "--json"])
    assert result.exit_code == EXIT_NOT_READY, result.output
    assert "127.0.0.1:1" in result.output and "llmops kafka start" in result.output


def test_the_help_says_which_source_wins() -> None:
    help_text = CliRunner().invoke(cli, ["--help"]).output
    assert "flags win over LLMOPS_*" in " ".join(help_text.split())
    topics_help = " ".join(CliRunner().invoke(cli, ["kafka", "topics", "--help"]).output.split())
    assert "-b, --bootstrap-server HOST:PORT[,...]" in topics_help and "--command-config FILE" in topics_help
