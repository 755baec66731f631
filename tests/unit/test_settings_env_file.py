"""A shared ``.env`` with other tools' keys must not break ``llmops``, and no settings error echoes a value."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from streams.cli.main import cli
from streams.cli.support import EXIT_USAGE
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk-live-Zq8v3KpL0w9XyT7mN2bR"  # looks like an API key; must never be printed


def clean_environ() -> dict[str, str]:
    """This process's environment without LLMOPS_* and OTEL_* variables, our code first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMOPS_", "OTEL_"))}
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """cwd = a fresh folder (where ``.env`` is read), no LLMOPS_* variables set."""
    for name in list(os.environ):
        if name.startswith(("LLMOPS_", "OTEL_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def llmops_subprocess(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean_environ(),
        timeout=120,
        check=False,
    )


def test_unrelated_keys_in_env_file_are_ignored_and_unknown_llmops_keys_named(
    in_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (in_tmp / ".env").write_text(
        f"OPENAI_API_KEY={SECRET}\nDATABASE_URL=postgres://u:{SECRET}@db/x\n"
        f"LLMOPS_MISSPELT_TOKEN={SECRET}\nLLMOPS_PARTITIONS=3\n"
    )
    with caplog.at_level(logging.WARNING):
        settings = Settings()
    assert settings.partitions == 3, "known keys in .env still apply"
    assert "LLMOPS_MISSPELT_TOKEN" in caplog.text, "an unknown LLMOPS_* key is named"
    assert "OPENAI_API_KEY" not in caplog.text, "keys outside our prefix are not our business"
    assert SECRET not in caplog.text

    runner = CliRunner()
    result = runner.invoke(cli, ["replay", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output

    done = llmops_subprocess(in_tmp, "replay", "list", "--json")
    assert done.returncode == 0, done.stderr
    assert "LLMOPS_MISSPELT_TOKEN" in done.stderr
    assert SECRET not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("line", "field", "kind"),
    [
        (f"LLMOPS_PARTITIONS={SECRET}", "LLMOPS_PARTITIONS", "int_parsing"),
        (f"LLMOPS_NAMESPACE={SECRET}", "LLMOPS_NAMESPACE", "value_error"),
        (f"LLMOPS_SECURITY_PROTOCOL={SECRET}", "LLMOPS_SECURITY_PROTOCOL", "literal_error"),
        (f"LLMOPS_REDACT_PII=[{SECRET!r}]", "LLMOPS_REDACT_PII", "parse error"),
        (f'LLMOPS_REDACT_PII=["{SECRET}"]', "LLMOPS_REDACT_PII", "value_error"),
    ],
)
def test_a_bad_value_is_reported_by_field_and_kind_never_echoed(in_tmp: Path, line: str, field: str, kind: str) -> None:
    (in_tmp / ".env").write_text(line + "\n")
    with pytest.raises((ValidationError, ValueError)) as raised:
        Settings()
    assert SECRET not in str(raised.value) and SECRET not in repr(raised.value)

    result = CliRunner().invoke(cli, ["replay", "list"])
    assert result.exit_code == EXIT_USAGE  # a setting to change: a configuration (usage) error
    assert field in result.output and kind in result.output, result.output
    assert SECRET not in result.output

    done = llmops_subprocess(in_tmp, "replay", "list")
    assert done.returncode == EXIT_USAGE
    assert field in done.stderr and kind in done.stderr, done.stderr
    assert SECRET not in done.stdout + done.stderr
