"""The run journal: every event of every run, committed to SQLite before the runner acts.

The runner records an event *before* it does what the event announces (``step-started`` is
written before the script is sent), so after a crash or a ``kill -9`` the journal says
exactly where each host was (wuremote/engine/progress.py folds that into what ``wuremote
resume`` continues from).  The journal holds events and run rows, and nothing else: SQLite
only.  WAL with ``synchronous=FULL`` makes every committed event survive the process, and
the machine too.

A resumed run may append to the same run id: a second ``run-started`` marks the run running
again and keeps the first options and inventory snapshot, so a fold sees the whole history.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..events import KINDS, Event, RunFinished, RunStarted
from ..secret import Secret

JOURNAL_FILE = "journal.sqlite3"

_RUN_COLUMNS = "run_id, created, command, status, options_json, inventory_json"
SCHEMA_VERSION = 2  # PRAGMA user_version; 0 is the first format (with a runs.plan_json column, always '{}')

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id       TEXT PRIMARY KEY,
    created      REAL NOT NULL,
    command      TEXT NOT NULL,
    status       TEXT NOT NULL,   -- running | finished | interrupted
    options_json TEXT NOT NULL,
    inventory_json TEXT NOT NULL  -- host settings without passwords: resume reconnects from these
);
CREATE TABLE IF NOT EXISTS events (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id    TEXT NOT NULL REFERENCES runs(run_id),
    time      REAL NOT NULL,
    kind      TEXT NOT NULL,
    host      TEXT,
    step      TEXT,
    data_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_run ON events(run_id, seq);
"""


class JournalError(RuntimeError):
    """The journal cannot take or give what was asked; the message says what to do."""


class UnknownRunError(JournalError, LookupError):
    """A run id that this state dir's journal has never seen."""


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    created: float
    command: str
    status: str  # running (also: killed while running) | finished | interrupted
    options: dict[str, Any]
    inventory: list[dict[str, Any]]


@dataclass
class _Pending:
    """An event waiting for the group commit that writes it."""

    event: Event
    data_json: str
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


def new_run_id() -> str:
    """Sortable by start time (UTC), unique enough with a random tail: 20261126-093700-ab12."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


class Journal:
    """One SQLite file per state dir, shared by all of the runner's worker threads.

    One connection behind a lock: writes are tiny and serialised by SQLite anyway, and a
    single connection keeps the commit order equal to the ``seq`` order.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / JOURNAL_FILE
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"cannot open the journal {self.path}: {exc}; "
                               "choose a writable --state-dir") from exc
        try:
            self._check_format()  # before anything is written: a file that is not ours stays as it was
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            self._migrate()
        except JournalError:
            self._db.close()
            raise
        except sqlite3.Error as exc:
            self._db.close()
            raise JournalError(f"cannot open the journal {self.path}: {exc}; "
                               "choose a writable --state-dir") from exc
        self._lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._writing = False
        self._known_runs: set[str] = set()

    def _check_format(self) -> None:
        """Refuse, untouched, a file that is not a wuremote journal this version can read."""
        try:
            tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{self.path} is not a readable journal ({exc}); it was left as it is: "
                               "move it away or choose another --state-dir") from None
        if tables - {"sqlite_sequence"} and not {"runs", "events"} <= tables:
            raise JournalError(f"{self.path} is not a wuremote journal (tables: {', '.join(sorted(tables))[:120]}); "
                               "it was left as it is: choose another --state-dir")
        if version > SCHEMA_VERSION:
            raise JournalError(f"{self.path} is a journal of schema {version}, written by a newer wuremote (this one "
                               f"reads schema {SCHEMA_VERSION}); it was left as it is: upgrade wuremote or choose "
                               "another --state-dir")

    def _migrate(self) -> None:
        """Bring a journal of the first format to this one (its plan_json column was never used)."""
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(runs)")}
        if "plan_json" in columns:
            self._db.execute("ALTER TABLE runs DROP COLUMN plan_json")
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # --- writing ---------------------------------------------------------------------------
    def new_run_id(self) -> str:
        """A run id not yet in this journal."""
        while True:
            run_id = new_run_id()
            if self._query_one("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)) is None:
                return run_id

    def record(self, event: Event) -> None:
        """Write one event and commit before returning: the runner acts only after this.

        Events recorded at the same moment from many threads share one transaction (group
        commit): the first caller writes everything queued, the others wait for their own
        event's commit.  A thousand hosts then cost a few commits a moment, not one each.
        """
        if KINDS.get(event.kind) is not type(event):
            raise JournalError(f"unknown event kind {event.kind!r} for run {event.run_id}; known: {', '.join(KINDS)}")
        item = _Pending(event, _dumps(event.data, f"{event.kind} event of run {event.run_id}"))
        with self._queue_lock:
            self._pending.append(item)
            leader = not self._writing
            self._writing = True
        if leader:
            while True:
                with self._queue_lock:
                    batch, self._pending = self._pending, []
                    if not batch:
                        self._writing = False
                        break
                self._write(batch)
        item.done.wait()
        if item.error is not None:
            raise item.error

    def _write(self, batch: list[_Pending]) -> None:
        try:
            with self._lock, self._transaction():
                for item in batch:
                    event = item.event
                    if isinstance(event, RunStarted):
                        self._start_run(event)
                        self._known_runs.add(event.run_id)
                    elif event.run_id not in self._known_runs:
                        if self._db.execute("SELECT 1 FROM runs WHERE run_id = ?", (event.run_id,)).fetchone() is None:
                            item.error = JournalError(f"{event.kind} event for run {event.run_id!r} which has no "
                                                      f"run-started in {self.path}; record run-started first")
                            continue
                        self._known_runs.add(event.run_id)
                    if isinstance(event, RunFinished):
                        status = "interrupted" if event.interrupted else "finished"
                        self._db.execute("UPDATE runs SET status = ? WHERE run_id = ?", (status, event.run_id))
                    self._db.execute(
                        "INSERT INTO events (run_id, time, kind, host, step, data_json) VALUES (?, ?, ?, ?, ?, ?)",
                        (event.run_id, event.time, event.kind, event.host, event.step, item.data_json))
        except BaseException as exc:  # noqa: BLE001 - every waiter hears why its event was not written
            error = exc if isinstance(exc, JournalError) else JournalError(f"cannot write to the journal {self.path}: {exc}")
            for item in batch:
                item.error = item.error or error
        finally:
            for item in batch:
                item.done.set()

    def _start_run(self, event: RunStarted) -> None:
        options_json = _dumps(event.options, f"options of run {event.run_id}")
        inventory_json = _dumps(event.inventory, f"inventory of run {event.run_id}")
        self._db.execute(
            "INSERT INTO runs (run_id, created, command, status, options_json, inventory_json) "
            "VALUES (?, ?, ?, 'running', ?, ?) ON CONFLICT(run_id) DO UPDATE SET status = 'running'",
            (event.run_id, event.time, event.command, options_json, inventory_json))

    # --- reading ---------------------------------------------------------------------------
    def runs(self) -> list[RunRecord]:
        """Every run, newest first."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY created DESC, run_id DESC").fetchall()
        return [_run_record(row) for row in rows]

    def run(self, run_id: str) -> RunRecord:
        row = self._query_one(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
        if row is None:
            known = self._query_one("SELECT count(*) FROM runs", ())
            raise UnknownRunError(f"no run {run_id!r} in the journal {self.path} ({known[0] if known else 0} runs there); "
                                  "list the runs of this state dir, or pass the --state-dir the run used")
        return _run_record(row)

    def events(self, run_id: str) -> list[Event]:
        """The run's events in the order they were recorded."""
        self.run(run_id)
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, run_id, host, step, data_json, time FROM events WHERE run_id = ? ORDER BY seq",
                (run_id,)).fetchall()
        return [Event.from_record(kind, rid, host, step, json.loads(data), when)
                for kind, rid, host, step, data, when in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- helpers ---------------------------------------------------------------------------
    def _query_one(self, sql: str, params: tuple[Any, ...]) -> Any:
        with self._lock:
            return self._db.execute(sql, params).fetchone()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): a run row and its event land together."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise JournalError(f"cannot write to the journal {self.path}: {exc}; "
                               "check free space and that no other process holds it") from exc
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._db.execute("ROLLBACK")
            raise JournalError(f"cannot write to the journal {self.path}: {exc}; check free space") from exc


def _run_record(row: tuple[Any, ...]) -> RunRecord:
    run_id, created, command, status, options_json, inventory_json = row
    return RunRecord(run_id, created, command, status, json.loads(options_json), json.loads(inventory_json))


def _dumps(value: Any, where: str) -> str:
    """JSON for a row; refuses a Secret anywhere inside, and anything JSON cannot hold."""
    for path, item in _walk(value, "data"):
        if isinstance(item, Secret):
            raise JournalError(f"{where}: {path} holds a Secret; the journal never stores credentials "
                               "(record the credential's name, not its value)")
    try:
        return json.dumps(value, default=_plain, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise JournalError(f"{where}: cannot be stored as JSON ({exc}); record plain values") from exc


def _walk(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(key, f"{path} key")
            yield from _walk(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple, set, frozenset)):
        for index, item in enumerate(value):
            yield from _walk(item, f"{path}[{index}]")


def _plain(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON")
