"""The file sinks' write-then-rename file: visible only when committed, nothing left when discarded,
and a killed attempt's temporary file removed by the next attempt of the same name."""

from __future__ import annotations

from pathlib import Path

from directstream.executor.processors.durable_file import DurableFile


def hidden(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_commit_makes_the_whole_file_appear_at_once(tmp_path: Path) -> None:
    final = tmp_path / "t" / "0" / "a.jsonl"
    target = DurableFile(final)
    target.write(b"one\n")
    target.flush()
    assert not final.exists(), "nothing at the final name before commit"
    target.write(b"two\n")
    target.commit()
    assert final.read_bytes() == b"one\ntwo\n"
    assert hidden(final.parent) == []


def test_discard_leaves_nothing_and_drops_later_writes(tmp_path: Path) -> None:
    final = tmp_path / "a.parquet"
    target = DurableFile(final)
    target.write(b"partial")
    target.discard()
    assert target.write(b"late") == 4
    assert list(tmp_path.iterdir()) == []


def test_a_killed_attempts_temporary_file_is_removed_by_the_next(tmp_path: Path) -> None:
    final = tmp_path / "a.jsonl"
    killed = DurableFile(final)
    killed.write(b"half")
    killed.flush()  # the process dies here: its temporary file stays behind
    other = tmp_path / ".b.jsonl.x.tmp"
    other.write_bytes(b"another range's")
    retry = DurableFile(final)
    assert not killed.temp.exists()
    assert other.exists(), "only the same name's leftovers are removed"
    retry.write(b"whole")
    retry.commit()
    assert final.read_bytes() == b"whole"
    assert hidden(tmp_path) == [other.name]
