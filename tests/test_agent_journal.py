"""The journal file: torn last lines are dropped before appending; readers wait for a torn line and refuse a
corrupt one (agents.journal: one parser, one policy)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.errors import ProtocolError
from agents.journal import MAX_LINE_BYTES, iter_lines, read_journal
from agents.runner import Journal


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


def test_reader_leaves_a_torn_tail_and_refuses_corrupt_lines(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b'{"type": "a"}\n\n{"type": "b"}\n{"type": "c"')
    assert read_journal(path) == [{"type": "a"}, {"type": "b"}]
    assert read_journal(tmp_path / "absent.jsonl") == []
    for bad, why in ((b"not json", "not valid JSON"), (b"[1, 2]", "JSON list, not an object"),
                     (b'{"b": 2}', "no string 'type'"), (b'{"type": "r", "x": NaN}', "not valid JSON")):
        path.write_bytes(b'{"type": "a"}\n' + bad + b'\n{"type": "b"}\n')
        with pytest.raises(ProtocolError, match=why) as info:
            read_journal(path)
        assert "byte 14" in str(info.value)
        events, used = iter_lines(path.read_bytes()[:14])
        assert events == [{"type": "a"}] and used == 14
        with pytest.raises(ProtocolError, match=why):
            iter_lines(path.read_bytes())


def test_an_over_long_line_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b'{"type": "a"}\n' + b"x" * (MAX_LINE_BYTES + 10) + b"\n")
    with pytest.raises(ProtocolError, match="longer than"):
        read_journal(path)
    data = path.read_bytes()
    events, used = iter_lines(data[:MAX_LINE_BYTES + 1])  # what one poll reads (READ_BYTES)
    assert events == [{"type": "a"}] and used == 14
    with pytest.raises(ProtocolError, match="line at byte 14 is longer than"):
        iter_lines(data[14:14 + MAX_LINE_BYTES + 1], 14)  # the next poll: no newline in a whole window


def test_append_adds_exactly_one_newline(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.append('{"x": 1}')
    journal.append('{"x": 2}\n')
    journal.close()
    assert (tmp_path / "journal.jsonl").read_text() == '{"x": 1}\n{"x": 2}\n'
