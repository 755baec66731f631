"""A replay namespace is checked wherever it enters, so that nothing outside it is ever dropped."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from streams.cli.main import cli
from streams.kafka.topics import ALL_BASE_NAMES, NamespaceError, Topics, check_namespace, owned_by
from streams.replay.runner import ReplayError, ReplaySpec, replay_dir, replay_settings
from streams.settings import Settings

OUTSIDE = ["", "..", "../..", "/etc", "a/b", "docs", "models", "inference", "monitor", "telemetry", "feedback"]
OUTSIDE += ["deadletter", "live", "live-x", "r1-embed", "llmops", "R1", "r_1", "1r", "a" * 41]


@pytest.mark.parametrize("name", OUTSIDE)
def test_names_that_reach_outside_a_namespace_are_refused_everywhere(name: str, tmp_path: Path) -> None:
    live = Settings(data_dir=tmp_path)
    with pytest.raises(NamespaceError):
        check_namespace(name)
    with pytest.raises(ReplayError):
        ReplaySpec("docs.raw", name).check(live.namespace)
    with pytest.raises(ReplayError):
        replay_dir(live, name)
    with pytest.raises(ReplayError):
        replay_settings(live, name)


@pytest.mark.parametrize("name", ["r1", "exp-2", "ra1b2c3", "a" * 40])
def test_good_names_are_accepted_and_their_folder_is_under_the_replays_folder(name: str, tmp_path: Path) -> None:
    live = Settings(data_dir=tmp_path)
    assert check_namespace(name) == name
    assert replay_dir(live, name) == (tmp_path / "replays" / name).resolve()
    assert replay_settings(live, name).namespace == name


def test_the_live_namespace_is_never_a_replay_namespace(tmp_path: Path) -> None:
    with pytest.raises(NamespaceError, match="other than the live one"):
        check_namespace("prod", live="prod")
    with pytest.raises(ValidationError):
        Settings(namespace="live")  # would share live traffic's consumer groups (llmops-live-*)


def test_a_folder_symlinked_out_of_the_replays_folder_is_refused(tmp_path: Path) -> None:
    live = Settings(data_dir=tmp_path / "data")
    (tmp_path / "data" / "replays").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "data" / "replays" / "r1").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ReplayError, match="outside"):
        replay_dir(live, "r1")


def test_a_namespace_owns_its_topics_and_groups_and_nothing_else() -> None:
    live_names = [*ALL_BASE_NAMES, Topics("").app_id("ingest"), Topics("").app_id("embed", "index") + "-x-changelog"]
    r1, r1b = Topics("r1"), Topics("r1-b")
    mine = [r1.docs_raw, r1.app_id("embed", "index", "infer", "ingest") + "-__assignor-__leader"]
    mine += [r1.requests_group("infer"), r1.inference_clients_group]
    theirs = [r1b.docs_raw, r1b.app_id("embed", "index", "infer", "ingest"), r1b.inference_clients_group]
    assert all(owned_by(name, "r1") for name in mine)
    assert not any(owned_by(name, "r1") for name in [*live_names, *theirs])
    assert not any(owned_by(name, ns) for name in live_names for ns in ("r1", "exp-2", "docs2"))


@pytest.mark.parametrize("name", ["..", "../..", "docs", "live"])
def test_drop_refuses_before_it_touches_anything(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    (data / "replays").mkdir(parents=True)
    (data / "keep.txt").write_text("state")
    monkeypatch.setenv("LLMOPS_DATA_DIR", str(data))
    monkeypatch.setenv("LLMOPS_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # nothing listens: no broker is needed to refuse
    monkeypatch.delenv("LLMOPS_NAMESPACE", raising=False)
    result = CliRunner().invoke(cli, ["replay", "drop", name, "--yes"])
    assert result.exit_code == 1, result.output
    assert "namespace" in result.output
    assert (data / "keep.txt").read_text() == "state"


def test_what_the_live_namespace_owns_is_never_dropped_even_when_it_looks_like_a_replays() -> None:
    from streams.replay.namespaces import _droppable

    live = Settings(namespace="r1-embed")
    assert not _droppable(live, "llmops-r1-embed-embed", "r1")  # live's embed group, not replay r1's
    assert not _droppable(live, "r1-embed.docs.raw", "r1")
    assert _droppable(live, "llmops-r1-embed_index", "r1") and _droppable(live, "r1.docs.raw", "r1")
