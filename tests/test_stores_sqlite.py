"""What only the SQLite store has to prove: a real file shared by real processes, and its migrations."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from daehwa.stores import NewConversation, NewMessage, NewTurn, TurnResult
from daehwa.stores.migrations import MIGRATIONS_TABLE, sqlite_migrations
from daehwa.stores.sqlite import SQLiteStore
from daehwa.stores.sqlite.connection import CHECKPOINT_EVERY, in_transaction
from daehwa.types import MessageStatus, Outcome, Usage, UsageRecord


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (a separate process with its own connection to the file)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


WRITER = """
import asyncio, sys
from daehwa.stores import NewConversation, NewTurn, TurnResult
from daehwa.stores.sqlite import SQLiteStore
from daehwa.types import MessageStatus

async def main(path):
    store = SQLiteStore(path)
    await store.open()
    user = await store.create_user("민수", password_hash="h")
    conv = await store.create_conversation(user.id, NewConversation(title="재시작 테스트", meta={"k": [1, 2]}))
    _, reply = await store.begin_turn(user.id, conv.id, NewTurn(user_content="안녕?", reply_model="local"))
    await store.finish_turn(user.id, reply.id, TurnResult(content="안녕하세요!", status=MessageStatus.COMPLETE,
                                                          model="local"))
    await store.close()
    print(user.id, conv.id)

asyncio.run(main(sys.argv[1]))
"""

READER = """
import asyncio, json, sys
from daehwa.stores.sqlite import SQLiteStore

async def main(path, user_id, conv_id):
    store = SQLiteStore(path)
    await store.open()
    conv = await store.get_conversation(user_id, conv_id)
    messages = await store.list_messages(user_id, conv_id)
    user = await store.get_user_by_name("민수")
    await store.close()
    print(json.dumps({"title": conv.title, "meta": dict(conv.meta), "user": user.user.id,
                      "messages": [[m.role, m.content, m.status.value] for m in messages]}, ensure_ascii=False))

asyncio.run(main(*sys.argv[1:]))
"""


def test_data_survives_a_process_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "deep" / "er" / "daehwa.db")  # the directories do not exist yet
    wrote = run_python(WRITER, path)
    assert wrote.returncode == 0, wrote.stderr
    user_id, conv_id = wrote.stdout.split()
    read = run_python(READER, path, user_id, conv_id)
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout) == {
        "title": "재시작 테스트",
        "meta": {"k": [1, 2]},
        "user": user_id,
        "messages": [["user", "안녕?", "complete"], ["assistant", "안녕하세요!", "complete"]],
    }


CONCURRENT_WRITER = """
import asyncio, sys
from daehwa.stores import NewTurn, TurnResult
from daehwa.stores.sqlite import SQLiteStore
from daehwa.types import MessageStatus, Outcome, Usage, UsageRecord

async def main(path, conv_id, worker, turns):
    store = SQLiteStore(path)
    await store.open()
    for i in range(int(turns)):
        _, reply = await store.begin_turn("u1", conv_id, NewTurn(user_content=f"{worker}:{i}", reply_model="m"))
        usage = UsageRecord(user_id="u1", model="m", usage=Usage(1, 2), outcome=Outcome.OK, ttft_ms=1.0, total_ms=2.0)
        await store.finish_turn("u1", reply.id, TurnResult(content=f"{worker}:{i}!", status=MessageStatus.COMPLETE,
                                                           model="m", usage=usage))
    await store.close()

asyncio.run(main(*sys.argv[1:]))
"""


async def test_several_processes_write_one_file_without_losing_anything(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    store = SQLiteStore(path)
    await store.open()
    conv = await store.create_conversation("u1")
    workers, turns = 4, 40
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            textwrap.dedent(CONCURRENT_WRITER),
            path,
            conv.id,
            str(w),
            str(turns),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for w in range(workers)
    ]
    # The parent writes too, through its own open connection, while the children run.
    for i in range(turns):
        await store.append_message("u1", conv.id, NewMessage(role="system", content=f"parent:{i}"))
    results = [await asyncio.wait_for(p.communicate(), timeout=120) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err.decode()
        assert b"locked" not in err

    messages = await store.list_messages("u1", conv.id)
    assert messages is not None
    assert len(messages) == workers * turns * 2 + turns
    assert len({m.id for m in messages}) == len(messages)
    for w in range(workers):
        mine = [m.content for m in messages if m.content.startswith(f"{w}:")]
        # Each turn's question is stored before its answer, and the turns keep their order.
        assert mine == [text for i in range(turns) for text in (f"{w}:{i}", f"{w}:{i}!")]
    parent = [m.content for m in messages if m.content.startswith("parent:")]
    assert parent == [f"parent:{i}" for i in range(turns)]
    assert all(m.status is MessageStatus.COMPLETE for m in messages)
    totals = await store.usage_totals(user_id="u1")
    assert [(t.turns, t.total_tokens) for t in totals] == [(workers * turns, workers * turns * 3)]
    await store.close()


DIES_MID_STREAM = """
import asyncio, os, sys
from daehwa.stores import MessageChange, NewTurn
from daehwa.stores.sqlite import SQLiteStore

async def main(path, conv_id):
    store = SQLiteStore(path)
    await store.open()
    _, reply = await store.begin_turn("u1", conv_id, NewTurn(user_content="long question", reply_model="m"))
    await store.update_message("u1", reply.id, MessageChange(content="the first half of"))
    print(reply.id, flush=True)
    os._exit(9)  # killed mid-stream: no close(), no finish_turn()

asyncio.run(main(*sys.argv[1:]))
"""


async def test_reopening_after_a_crash_marks_the_reply_interrupted(tmp_path: Path) -> None:
    path = str(tmp_path / "crash.db")
    store = SQLiteStore(path)
    await store.open()
    conv = await store.create_conversation("u1")
    await store.close()

    died = run_python(DIES_MID_STREAM, path, conv.id)
    assert died.returncode == 9, died.stderr
    reply_id = died.stdout.strip()
    with sqlite3.connect(path) as raw:  # the dead process left it streaming
        assert raw.execute("SELECT status FROM messages WHERE id = ?", (reply_id,)).fetchone() == ("streaming",)

    reopened = SQLiteStore(path)
    await reopened.open()
    await reopened.recover_interrupted()
    messages = await reopened.list_messages("u1", conv.id)
    await reopened.close()
    assert messages is not None
    assert [(m.content, m.status) for m in messages] == [
        ("long question", MessageStatus.COMPLETE),
        ("the first half of", MessageStatus.INTERRUPTED),
    ]


async def test_migrations_are_recorded_and_applied_once(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    store = SQLiteStore(path)
    await store.open()
    assert store.applied_migrations == sqlite_migrations.names
    await store.create_conversation("u1", NewConversation(title="kept"))
    await store.close()

    with sqlite3.connect(path) as raw:
        recorded = [row[0] for row in raw.execute(f"SELECT name FROM {MIGRATIONS_TABLE} ORDER BY rowid")]
        assert recorded == sqlite_migrations.names
        tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"conversations", "messages", "users", "api_keys", "sessions", "usage"} <= tables

    again = SQLiteStore(path)
    await again.open()
    assert again.applied_migrations == []  # nothing re-run
    assert [c.title for c in await again.list_conversations("u1")] == ["kept"]
    await again.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute(f"SELECT count(*) FROM {MIGRATIONS_TABLE}").fetchone() == (len(sqlite_migrations.names),)


async def test_a_new_migration_runs_on_the_next_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.db"
    store = SQLiteStore(path)
    await store.open()
    await store.close()

    def m999_add_column(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE conversations ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0")

    monkeypatch.setattr(sqlite_migrations, "steps", [*sqlite_migrations.steps, m999_add_column])
    upgraded = SQLiteStore(path)
    await upgraded.open()
    assert upgraded.applied_migrations == ["m999_add_column"]
    await upgraded.close()
    with sqlite3.connect(path) as raw:
        columns = {row[1] for row in raw.execute("PRAGMA table_info(conversations)")}
        assert "pinned" in columns


async def test_processes_opening_a_new_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    path = str(tmp_path / "race.db")
    code = textwrap.dedent(
        """
        import asyncio, sys
        from daehwa.stores.sqlite import SQLiteStore

        async def main(path):
            store = SQLiteStore(path)
            await store.open()
            await store.close()
            print(len(store.applied_migrations))

        asyncio.run(main(sys.argv[1]))
        """
    )
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        for _ in range(3)
    ]
    results = [await asyncio.wait_for(p.communicate(), timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err.decode() for _, err in results]
    counts = sorted(int(out) for out, _ in results)
    assert counts == [0, 0, len(sqlite_migrations.names)]  # exactly one process applied them


async def test_file_settings(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "d.db"
    store = SQLiteStore(path)
    await store.open()
    assert path.is_file()

    def pragmas(db: sqlite3.Connection) -> list[Any]:
        names = ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
        return [db.execute(f"PRAGMA {name}").fetchone()[0] for name in names]

    journal_mode, foreign_keys, busy_timeout, synchronous = await store._read(pragmas)
    assert journal_mode == "wal" and foreign_keys == 1 and busy_timeout >= 1000
    assert synchronous == 1  # NORMAL
    await store.close()


async def test_memory_database_works_for_quick_scripts() -> None:
    store = SQLiteStore(":memory:")
    await store.open()
    conv = await store.create_conversation("u1")
    await store.append_message("u1", conv.id, NewMessage(role="user", content="x"))
    assert len(await store.list_messages("u1", conv.id) or []) == 1
    await store.close()


async def test_using_a_store_before_open_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="open"):
        await SQLiteStore(tmp_path / "x.db").get_conversation("u1", "c")


def _count_hops(store: SQLiteStore) -> list[str]:
    """The names of the calls submitted to the store's thread from now on."""
    assert store._executor is not None
    submit = store._executor.submit
    hops: list[str] = []

    def counting_submit(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(args[1] if fn is in_transaction else fn, "__name__", "?"))
        return submit(fn, *args, **kwargs)

    store._executor.submit = counting_submit  # type: ignore[method-assign]
    return hops


async def test_a_turns_writes_run_inline_in_one_transaction_and_the_rest_take_one_hop(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "hops.db")
    await store.open()
    statements: list[str] = []
    await store._read(lambda db: db.set_trace_callback(statements.append))
    hops = _count_hops(store)

    conv, _, reply = await store.create_conversation_with_turn(
        "u1", NewConversation(kind="api"), NewTurn(user_content="q", reply_model="m")
    )
    body = [s for s in statements if not s.startswith("PRAGMA busy_timeout")]
    assert body[0] == "BEGIN IMMEDIATE" and body[-1] == "COMMIT"
    assert len(body) == 5  # BEGIN, conversation, user message, reply, COMMIT
    usage = UsageRecord(user_id="u1", model="m", usage=Usage(1, 2), outcome=Outcome.OK, ttft_ms=1.0, total_ms=2.0)
    await store.finish_turn(
        "u1", reply.id, TurnResult(content="a", status=MessageStatus.COMPLETE, model="m", meta=None, usage=usage)
    )
    await store.begin_turn("u1", conv.id, NewTurn(user_content="q2", reply_model="m"))
    assert hops == []  # the thread was idle: on the event loop, no hop at all
    await store.list_messages("u1", conv.id)
    await store.append_message("u1", conv.id, NewMessage(role="user", content="x"))
    assert len(hops) == 2  # one per other call, however many statements each ran
    statements.clear()
    await store.begin_turn("u1", conv.id, NewTurn(user_content="q3", reply_model="m"))
    # The lock is tried once, then the wait for other processes' locks is back for the thread's writes.
    assert statements[:3] == ["PRAGMA busy_timeout = 0", "BEGIN IMMEDIATE", "PRAGMA busy_timeout = 10000"]
    assert (await store._read(lambda db: db.execute("PRAGMA busy_timeout").fetchone()[0])) == 10_000
    await store.close()


async def test_a_small_write_goes_after_what_the_thread_is_still_doing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "order.db")
    await store.open()
    conv, _, reply = await store.create_conversation_with_turn(
        "u1", NewConversation(kind="api"), NewTurn(user_content="q", reply_model="m")
    )
    hops = _count_hops(store)
    gate = threading.Event()

    def slow_progress(db: sqlite3.Connection) -> None:  # a write queued on the thread, e.g. a reply's progress
        gate.wait(10)
        db.execute("UPDATE messages SET content = 'progress' WHERE id = ?", (reply.id,))

    queued = asyncio.ensure_future(store._write(slow_progress))
    await asyncio.sleep(0.05)
    final = asyncio.ensure_future(
        store.finish_turn("u1", reply.id, TurnResult(content="final", status=MessageStatus.COMPLETE))
    )
    await asyncio.sleep(0.05)
    assert not final.done()  # it did not overtake the write before it
    gate.set()
    await queued
    assert (await final) is not None
    assert hops == ["slow_progress", "work"]
    assert [m.content for m in await store.list_messages("u1", conv.id) or []] == ["q", "final"]
    await store.close()


async def test_an_inline_write_never_waits_for_another_process_on_the_event_loop(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "busy.db")
    await store.open()
    conv, _, reply = await store.create_conversation_with_turn(
        "u1", NewConversation(kind="api"), NewTurn(user_content="q", reply_model="m")
    )
    other = sqlite3.connect(tmp_path / "busy.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process is writing
    hops = _count_hops(store)
    final = asyncio.ensure_future(
        store.finish_turn("u1", reply.id, TurnResult(content="final", status=MessageStatus.COMPLETE))
    )
    await asyncio.sleep(0.2)  # the loop runs on: the write waits for the lock on the thread
    assert not final.done() and hops == ["work"]
    other.execute("COMMIT")
    other.close()
    assert (await asyncio.wait_for(final, 10)) is not None
    assert [m.content for m in await store.list_messages("u1", conv.id) or []] == ["q", "final"]
    await store.close()


async def test_wal_checkpoints_run_beside_the_stores_thread_and_writes_go_on(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "wal.db")
    await store.open()
    assert (await store._read(lambda db: db.execute("PRAGMA wal_autocheckpoint").fetchone()[0])) == 0
    hops = _count_hops(store)
    conv = await store.create_conversation("u1")
    hops.clear()
    for i in range(CHECKPOINT_EVERY):
        await store.begin_turn("u1", conv.id, NewTurn(user_content=f"q{i}", reply_model="m"))
    checkpoint = store._checkpointing
    assert checkpoint is not None and hops == []  # not on the store's thread, and no write went there meanwhile
    await checkpoint
    wal = tmp_path / "wal.db-wal"
    frames = await store._read(lambda db: db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())
    assert frames[1] == frames[2]  # every frame of the WAL is in the database file
    assert wal.exists() and len(await store.list_messages("u1", conv.id) or []) == 2 * CHECKPOINT_EVERY
    await store.close()


async def test_a_write_queued_behind_others_is_stored_even_if_its_caller_is_cancelled(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "shield.db")
    await store.open()
    conv = await store.create_conversation("u1")
    assert store._executor is not None
    gate = threading.Event()
    blocker = asyncio.get_running_loop().run_in_executor(store._executor, gate.wait, 10)  # keeps the thread busy
    writer = asyncio.create_task(
        store.append_message("u1", conv.id, NewMessage(role="assistant", content="partial reply"))
    )
    await asyncio.sleep(0.05)  # the write is queued, not started
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer
    gate.set()
    await blocker
    messages = await store.list_messages("u1", conv.id)
    assert [m.content for m in messages or []] == ["partial reply"]
    await store.close()


async def test_close_ends_the_worker_thread_and_a_closed_store_says_so(tmp_path: Path) -> None:
    before = {t.ident for t in threading.enumerate()}
    store = SQLiteStore(tmp_path / "t.db")
    await store.open()
    await store.ping()
    workers = [t for t in threading.enumerate() if t.ident not in before and t.name.startswith("daehwa-sqlite")]
    assert len(workers) == 1
    await store.close()
    assert not workers[0].is_alive()
    with pytest.raises(RuntimeError, match="open"):
        await store.ping()
    await store.close()  # a second close is harmless
