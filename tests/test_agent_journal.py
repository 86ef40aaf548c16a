"""The journal file: torn last lines are dropped before appending, readers skip what is not whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.runner import Journal, read_journal


@pytest.mark.parametrize(
    ("content", "kept"),
    [
        (b"", b""),
        (b'{"a": 1}\n', b'{"a": 1}\n'),
        (b'{"a": 1}\n{"type": "res', b'{"a": 1}\n'),
        (b'{"type": "res', b""),
        (b'{"a": 1}\n' + b"x" * 200_000, b'{"a": 1}\n'),  # fragment longer than one read-back block
    ],
)
def test_opening_cuts_a_torn_tail(tmp_path: Path, content: bytes, kept: bytes) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(content)
    journal = Journal(path)
    journal.append(json.dumps({"type": "done"}))
    journal.close()
    assert path.read_bytes() == kept + b'{"type": "done"}\n'


def test_reader_skips_incomplete_and_non_object_lines(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b'{"a": 1}\nnot json\n[1, 2]\n{"b": 2}\n{"c": 3')
    assert read_journal(path) == [{"a": 1}, {"b": 2}]
    assert read_journal(tmp_path / "absent.jsonl") == []


def test_append_adds_exactly_one_newline(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.append('{"x": 1}')
    journal.append('{"x": 2}\n')
    journal.close()
    assert (tmp_path / "journal.jsonl").read_text() == '{"x": 1}\n{"x": 2}\n'
