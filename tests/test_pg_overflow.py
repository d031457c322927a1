"""Rows that overflow the PostgreSQL write-behind buffer are kept on disk, in order, across restarts."""

from __future__ import annotations

from pathlib import Path

from persistence.pg_overflow import SqliteOverflow
from persistence.pg_rows import PendingRow


def _rows(a: int, b: int) -> list[PendingRow]:
    return [PendingRow("txn", (f"c:{i}:1:0", "acct", "c", i, "harvest", 0, 5, 5 * i, None)) for i in range(a, b)]


async def test_spill_survives_a_restart_and_unspills_in_order(tmp_path: Path) -> None:
    path = tmp_path / "pg_overflow.sqlite"
    sink = SqliteOverflow(path)
    sink.spill(_rows(0, 100))
    sink.spill(_rows(100, 250))
    assert sink.pending() == 250
    first = await sink.unspill(30)
    assert first == _rows(0, 30)
    sink.close()  # a crash after this point loses nothing: the rows are on disk
    again = SqliteOverflow(path)
    assert again.pending() == 220
    rest = await again.unspill(1000)
    assert rest == _rows(30, 250)
    assert again.pending() == 0 and again.drain() == []
    again.close()
