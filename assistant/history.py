"""Chat history in SQLite under the user data directory (`platformdirs.user_data_dir("llasm")/history.db`,
or `$LLASM_HISTORY`).

Two tables: `chats` (one row per conversation, titled by its first user turn) and `turns` (role, text,
whether the user spoke or typed it, the timings of assistant replies as JSON). The TUI lists chats and
reloads one into the transcript.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS chats (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    title TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS turns (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    created REAL NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    text TEXT NOT NULL,
    spoken INTEGER NOT NULL DEFAULT 0,
    timings TEXT
);
CREATE INDEX IF NOT EXISTS turns_chat ON turns(chat_id, id);
"""


class HistoryError(RuntimeError):
    pass


@dataclass
class Turn:
    role: str
    text: str
    spoken: bool = False
    timings: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0


@dataclass
class ChatSummary:
    id: int
    created: float
    title: str
    turns: int


def history_path() -> Path:
    env = os.environ.get("LLASM_HISTORY")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("llasm")) / "history.db"


class History:
    """Thread-safe (one connection, one lock): workers add turns while the UI lists chats."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else history_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False)
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as e:
            raise HistoryError(f"cannot open chat history {self.path}: {e}; delete it or set LLASM_HISTORY") from None
        self._lock = threading.Lock()

    def new_chat(self, title: str = "") -> int:
        with self._lock, self._db:
            cur = self._db.execute("INSERT INTO chats (created, title) VALUES (?, ?)", (time.time(), title))
            return int(cur.lastrowid)

    def add_turn(
        self, chat_id: int, role: str, text: str, *, spoken: bool = False, timings: dict[str, Any] | None = None
    ) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO turns (chat_id, created, role, text, spoken, timings) VALUES (?, ?, ?, ?, ?, ?)",
                (chat_id, time.time(), role, text, int(spoken), json.dumps(timings) if timings else None),
            )
            if role == "user":
                self._db.execute(
                    "UPDATE chats SET title = ? WHERE id = ? AND title = ''", (text.strip()[:80], chat_id)
                )

    def chats(self, limit: int = 50) -> list[ChatSummary]:
        with self._lock:
            rows = self._db.execute(
                "SELECT c.id, c.created, c.title, COUNT(t.id) FROM chats c LEFT JOIN turns t ON t.chat_id = c.id "
                "GROUP BY c.id HAVING COUNT(t.id) > 0 ORDER BY c.id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [ChatSummary(int(r[0]), float(r[1]), str(r[2]), int(r[3])) for r in rows]

    def turns(self, chat_id: int) -> list[Turn]:
        with self._lock:
            rows = self._db.execute(
                "SELECT role, text, spoken, timings, created FROM turns WHERE chat_id = ? ORDER BY id", (chat_id,)
            ).fetchall()
        return [Turn(r[0], r[1], bool(r[2]), json.loads(r[3]) if r[3] else {}, float(r[4])) for r in rows]

    def delete_chat(self, chat_id: int) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM turns WHERE chat_id = ?", (chat_id,))
            self._db.execute("DELETE FROM chats WHERE id = ?", (chat_id,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
