"""The closed-loop results file: one writer at a time, resume by content, each episode once."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.bridge import LoopSettings, open_results, read_results
from pipeline.errors import UserError
from pipeline.results_lock import results_lock

SETTINGS = LoopSettings(env_id="CartPole-v1", target="reference", graph="/abs/m.nir", graph_sha256="ab" * 32,
                        compare=None, episodes=4, seed=0, epsilon=0.0, max_steps=None)


def test_a_second_writer_is_refused_while_the_first_holds_the_file(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    with results_lock(path):
        with pytest.raises(UserError, match="being written by another run"):
            with results_lock(path):
                pass
    with results_lock(path):  # released when the first run ends
        pass


def test_duplicate_episodes_count_once(tmp_path: Path, capsys) -> None:
    path = tmp_path / "r.jsonl"
    open_results(path, SETTINGS, resume=False)
    for ep in (0, 0, 1, 1, 2):
        with open(path, "a") as fh:
            fh.write(json.dumps({"type": "episode", "episode": ep, "return": 10.0 + ep}) + "\n")
    _, episodes = read_results(path)
    assert [e["episode"] for e in episodes] == [0, 1, 2]
    assert "2 duplicate episode record(s)" in capsys.readouterr().out


def test_resume_keys_the_graph_by_content_not_path_spelling(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    open_results(path, SETTINGS, resume=False)
    assert open_results(path, replace(SETTINGS, graph="m.nir"), resume=True) == []
    with pytest.raises(UserError, match="graph_sha256"):
        open_results(path, replace(SETTINGS, graph_sha256="cd" * 32), resume=True)


@pytest.mark.parametrize("content", [b"", b"[1, 2]\n", b"\xff\xfe\x00garbage\n", b'{"type": "header"}\n'])
def test_empty_or_foreign_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(content)
    if not content:  # a run that stopped before writing its header: starts afresh
        assert open_results(path, SETTINGS, resume=False) == []
        return
    with pytest.raises(UserError, match="not a .*closed-loop results file"):
        open_results(path, SETTINGS, resume=True)
