"""Schema migrations: for each SQL backend, a list of small functions applied in order and recorded.

As in Simon Willison's ``llm``: a migration is a function decorated with its backend's list; ``apply_*`` runs those
not yet recorded in the ``_daehwa_migrations`` table, in definition order, inside one transaction that also holds a
lock, so two processes starting at once neither race nor apply anything twice. A released migration is never edited:
a change of schema is a new function at the end of the list.

Redis keeps JSON documents and needs no schema migrations (see ``docs/stores.md``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from .common import iso, utcnow

MIGRATIONS_TABLE = "_daehwa_migrations"

Step = TypeVar("Step", bound=Callable[..., Any])


class Migrations(Generic[Step]):
    """An ordered list of named migration functions for one backend; use an instance as a decorator.

    SQLite steps are plain functions (they run on the SQLite store's own thread); PostgreSQL steps are coroutines.
    """

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.steps: list[Step] = []

    def __call__(self, fn: Step) -> Step:
        if any(step.__name__ == fn.__name__ for step in self.steps):
            raise ValueError(f"duplicate {self.backend} migration {fn.__name__}")
        self.steps.append(fn)
        return fn

    @property
    def names(self) -> list[str]:
        return [step.__name__ for step in self.steps]


# -- SQLite ------------------------------------------------------------------------------------------------------
# Times are fixed-width ISO-8601 text in UTC (string order == time order); meta columns hold JSON objects.

sqlite_migrations: Migrations[Callable[[sqlite3.Connection], None]] = Migrations("sqlite")


@sqlite_migrations
def m001_conversations(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE conversations (
            id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL,
            title TEXT NOT NULL DEFAULT '',
            title_key TEXT NOT NULL DEFAULT '',
            persona TEXT,
            model TEXT,
            kind TEXT NOT NULL DEFAULT 'chat',
            meta TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX conversations_by_user ON conversations (user_id, updated_at DESC)")


@sqlite_migrations
def m002_messages(db: sqlite3.Connection) -> None:
    # ``seq`` (the rowid) orders messages: ids are ordered only to the millisecond.
    db.execute(
        """CREATE TABLE messages (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            role TEXT NOT NULL,
            content TEXT NOT NULL,
            status TEXT NOT NULL,
            model TEXT,
            meta TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX messages_by_conversation ON messages (conversation_id, seq)")
    # Only the few replies in flight are in this index; open() uses it to find those a dead process left.
    db.execute("CREATE INDEX messages_streaming ON messages (status) WHERE status = 'streaming'")


@sqlite_migrations
def m003_accounts(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE users (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            password_hash TEXT,
            is_admin INTEGER NOT NULL DEFAULT 0,
            anonymous INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL,
            name TEXT NOT NULL,
            prefix TEXT NOT NULL,
            key_hash TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            last_used_at TEXT,
            revoked_at TEXT
        )"""
    )
    db.execute("CREATE INDEX api_keys_by_user ON api_keys (user_id)")
    db.execute(
        """CREATE TABLE sessions (
            token_hash TEXT PRIMARY KEY,
            user_id TEXT NOT NULL,
            csrf_token TEXT NOT NULL,
            expires_at TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX sessions_by_expiry ON sessions (expires_at)")


@sqlite_migrations
def m004_usage(db: sqlite3.Connection) -> None:
    # No foreign key to conversations: accounting outlives the history it was for.
    db.execute(
        """CREATE TABLE usage (
            id INTEGER PRIMARY KEY,
            user_id TEXT NOT NULL,
            model TEXT NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            outcome TEXT NOT NULL,
            ttft_ms REAL,
            total_ms REAL NOT NULL,
            cost REAL,
            source TEXT NOT NULL,
            conversation_id TEXT,
            message_id TEXT,
            request_id TEXT,
            created_at TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX usage_by_user ON usage (user_id, created_at)")
    db.execute("CREATE INDEX usage_by_time ON usage (created_at)")


@sqlite_migrations
def m005_sessions_by_user(db: sqlite3.Connection) -> None:
    # A password change ends all of a user's sessions and login links at once.
    db.execute("CREATE INDEX sessions_by_user ON sessions (user_id)")


@sqlite_migrations
def m006_context(db: sqlite3.Connection) -> None:
    # One vector per message (float32 bytes, by the embedder ``model``) and one rolling summary per conversation;
    # both go with their message / conversation.
    db.execute(
        """CREATE TABLE message_vectors (
            message_id TEXT PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
            conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            model TEXT NOT NULL,
            vector BLOB NOT NULL
        )"""
    )
    db.execute("CREATE INDEX message_vectors_by_conversation ON message_vectors (conversation_id, model)")
    db.execute(
        """CREATE TABLE conversation_summaries (
            conversation_id TEXT PRIMARY KEY REFERENCES conversations (id) ON DELETE CASCADE,
            first_id TEXT NOT NULL,
            last_id TEXT NOT NULL,
            messages INTEGER NOT NULL,
            text TEXT NOT NULL,
            model TEXT NOT NULL,
            created_at TEXT NOT NULL
        )"""
    )


@sqlite_migrations
def m007_profiles(db: sqlite3.Connection) -> None:
    # Conversation intelligence: a user's interests (time-scaled scores, see daehwa.intelligence.interests) and
    # what they did with recommended catalogue items.
    db.execute(
        """CREATE TABLE user_interests (
            user_id TEXT NOT NULL,
            term TEXT NOT NULL,
            score REAL NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (user_id, term)
        )"""
    )
    db.execute("CREATE INDEX user_interests_by_score ON user_interests (user_id, score)")
    db.execute(
        """CREATE TABLE recommendation_feedback (
            user_id TEXT NOT NULL,
            catalogue TEXT NOT NULL,
            item_id TEXT NOT NULL,
            clicks INTEGER NOT NULL DEFAULT 0,
            dismissed INTEGER NOT NULL DEFAULT 0,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (user_id, catalogue, item_id)
        )"""
    )


@sqlite_migrations
def m008_forms(db: sqlite3.Connection) -> None:
    # Completed forms (reservations...). No foreign key: the record is the outcome and outlives its conversation.
    db.execute(
        """CREATE TABLE form_records (
            id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL,
            conversation_id TEXT NOT NULL,
            form TEXT NOT NULL,
            record_values TEXT NOT NULL DEFAULT '{}',
            delivery TEXT,
            created_at TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX form_records_by_user ON form_records (user_id, conversation_id, created_at)")


@sqlite_migrations
def m009_stream_chunks(db: sqlite3.Connection) -> None:
    # The chunk log of replies being streamed (resume from any process). Not tied to messages by a foreign key: a
    # log outlives nothing for long (it expires minutes after its last write, ``expires_at``, epoch seconds).
    db.execute(
        """CREATE TABLE reply_streams (
            message_id TEXT PRIMARY KEY,
            conversation_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            lease_until REAL NOT NULL,
            ended INTEGER NOT NULL DEFAULT 0,
            expires_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX reply_streams_by_expiry ON reply_streams (expires_at)")
    db.execute(
        """CREATE TABLE stream_chunks (
            message_id TEXT NOT NULL REFERENCES reply_streams (message_id) ON DELETE CASCADE,
            end_offset INTEGER NOT NULL,
            start_offset INTEGER NOT NULL,
            text TEXT NOT NULL,
            PRIMARY KEY (message_id, end_offset)
        )"""
    )


@sqlite_migrations
def m011_profile_settings(db: sqlite3.Connection) -> None:
    # A user's switches for conversation intelligence; no row: the defaults (interests remembered).
    db.execute(
        """CREATE TABLE profile_settings (
            user_id TEXT PRIMARY KEY,
            interests_enabled INTEGER NOT NULL DEFAULT 1,
            updated_at TEXT NOT NULL
        )"""
    )


def apply_sqlite(db: sqlite3.Connection) -> list[str]:
    """Apply pending SQLite migrations in one ``BEGIN IMMEDIATE`` transaction; return the names applied now."""
    # IMMEDIATE takes the write lock first, so a second process waits (busy_timeout) and then sees them recorded.
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (name TEXT PRIMARY KEY, applied_at TEXT)")
        done = {row[0] for row in db.execute(f"SELECT name FROM {MIGRATIONS_TABLE}")}
        applied = []
        for step in sqlite_migrations.steps:
            if step.__name__ in done:
                continue
            step(db)
            db.execute(
                f"INSERT INTO {MIGRATIONS_TABLE} (name, applied_at) VALUES (?, ?)", (step.__name__, iso(utcnow()))
            )
            applied.append(step.__name__)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return applied


# -- PostgreSQL --------------------------------------------------------------------------------------------------
# Same tables as SQLite, with native types: timestamptz, JSONB meta, bigint identity for message order.

postgres_migrations: Migrations[Callable[[Any], Awaitable[None]]] = Migrations("postgres")  # asyncpg.Connection


def _postgres_sql(name: str, sql: str) -> None:
    """Append the PostgreSQL migration ``name`` that runs ``sql`` (asyncpg runs ``;``-separated statements at once)."""

    async def step(conn: Any) -> None:
        await conn.execute(sql)

    step.__name__ = step.__qualname__ = name
    postgres_migrations(step)


_postgres_sql(
    "p001_conversations",
    """CREATE TABLE conversations (
        id text PRIMARY KEY,
        user_id text NOT NULL,
        title text NOT NULL DEFAULT '',
        title_key text NOT NULL DEFAULT '',
        persona text,
        model text,
        kind text NOT NULL DEFAULT 'chat',
        meta jsonb NOT NULL DEFAULT '{}'::jsonb,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL
    );
    CREATE INDEX conversations_by_user ON conversations (user_id, updated_at DESC);""",
)

_postgres_sql(
    "p002_messages",
    """CREATE TABLE messages (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id text NOT NULL UNIQUE,
        conversation_id text NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        role text NOT NULL,
        content text NOT NULL,
        status text NOT NULL,
        model text,
        meta jsonb NOT NULL DEFAULT '{}'::jsonb,
        created_at timestamptz NOT NULL
    );
    CREATE INDEX messages_by_conversation ON messages (conversation_id, seq);
    CREATE INDEX messages_streaming ON messages (status) WHERE status = 'streaming';""",
)

_postgres_sql(
    "p003_accounts",
    """CREATE TABLE users (
        id text PRIMARY KEY,
        name text NOT NULL UNIQUE,
        password_hash text,
        is_admin boolean NOT NULL DEFAULT false,
        anonymous boolean NOT NULL DEFAULT false,
        created_at timestamptz NOT NULL
    );
    CREATE TABLE api_keys (
        id text PRIMARY KEY,
        user_id text NOT NULL,
        name text NOT NULL,
        prefix text NOT NULL,
        key_hash text NOT NULL UNIQUE,
        created_at timestamptz NOT NULL,
        last_used_at timestamptz,
        revoked_at timestamptz
    );
    CREATE INDEX api_keys_by_user ON api_keys (user_id);
    CREATE TABLE sessions (
        token_hash text PRIMARY KEY,
        user_id text NOT NULL,
        csrf_token text NOT NULL,
        expires_at timestamptz NOT NULL
    );
    CREATE INDEX sessions_by_expiry ON sessions (expires_at);""",
)

_postgres_sql(
    "p004_usage",
    """CREATE TABLE usage (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        user_id text NOT NULL,
        model text NOT NULL,
        prompt_tokens integer NOT NULL,
        completion_tokens integer NOT NULL,
        outcome text NOT NULL,
        ttft_ms double precision,
        total_ms double precision NOT NULL,
        cost double precision,
        source text NOT NULL,
        conversation_id text,
        message_id text,
        request_id text,
        created_at timestamptz NOT NULL
    );
    CREATE INDEX usage_by_user ON usage (user_id, created_at);
    CREATE INDEX usage_by_time ON usage (created_at);""",
)

_postgres_sql(
    "p005_sessions_by_user",
    "CREATE INDEX sessions_by_user ON sessions (user_id)",
)

# Vectors as real[] (float4, what the embedder makes): the engine compares a conversation's own vectors, a few
# hundred at most, in memory, so no index over vectors (pgvector) is needed.
_postgres_sql(
    "p006_context",
    """CREATE TABLE message_vectors (
        message_id text PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
        conversation_id text NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        model text NOT NULL,
        vector real[] NOT NULL
    );
    CREATE INDEX message_vectors_by_conversation ON message_vectors (conversation_id, model);
    CREATE TABLE conversation_summaries (
        conversation_id text PRIMARY KEY REFERENCES conversations (id) ON DELETE CASCADE,
        first_id text NOT NULL,
        last_id text NOT NULL,
        messages integer NOT NULL,
        text text NOT NULL,
        model text NOT NULL,
        created_at timestamptz NOT NULL
    );""",
)

_postgres_sql(
    "p007_profiles",
    """CREATE TABLE user_interests (
        user_id text NOT NULL,
        term text NOT NULL,
        score double precision NOT NULL,
        updated_at timestamptz NOT NULL,
        PRIMARY KEY (user_id, term)
    );
    CREATE INDEX user_interests_by_score ON user_interests (user_id, score);
    CREATE TABLE recommendation_feedback (
        user_id text NOT NULL,
        catalogue text NOT NULL,
        item_id text NOT NULL,
        clicks integer NOT NULL DEFAULT 0,
        dismissed boolean NOT NULL DEFAULT false,
        updated_at timestamptz NOT NULL,
        PRIMARY KEY (user_id, catalogue, item_id)
    );""",
)

_postgres_sql(
    "p008_forms",
    """CREATE TABLE form_records (
        id text PRIMARY KEY,
        user_id text NOT NULL,
        conversation_id text NOT NULL,
        form text NOT NULL,
        record_values jsonb NOT NULL DEFAULT '{}'::jsonb,
        delivery text,
        created_at timestamptz NOT NULL
    );
    CREATE INDEX form_records_by_user ON form_records (user_id, conversation_id, created_at);""",
)

_postgres_sql(
    "p009_stream_chunks",
    """CREATE TABLE reply_streams (
        message_id text PRIMARY KEY,
        conversation_id text NOT NULL,
        user_id text NOT NULL,
        lease_until timestamptz NOT NULL,
        ended boolean NOT NULL DEFAULT false,
        expires_at timestamptz NOT NULL
    );
    CREATE INDEX reply_streams_by_expiry ON reply_streams (expires_at);
    CREATE TABLE stream_chunks (
        message_id text NOT NULL REFERENCES reply_streams (message_id) ON DELETE CASCADE,
        end_offset integer NOT NULL,
        start_offset integer NOT NULL,
        text text NOT NULL,
        PRIMARY KEY (message_id, end_offset)
    );""",
)

# + 1 on every write to the conversation or its messages, in the same statement: what the cache of hot
# conversations (stores/cache.py) compares. A constant default: no table rewrite.
_postgres_sql(
    "p010_conversation_versions",
    "ALTER TABLE conversations ADD COLUMN version bigint NOT NULL DEFAULT 1",
)

_postgres_sql(
    "p011_profile_settings",
    """CREATE TABLE profile_settings (
        user_id text PRIMARY KEY,
        interests_enabled boolean NOT NULL DEFAULT true,
        updated_at timestamptz NOT NULL
    );""",
)

# Circuit breakers some process opened, shared by every process of the store (stores/breakers.py).
_postgres_sql(
    "p012_breakers",
    "CREATE TABLE breakers (model text PRIMARY KEY, open_until timestamptz NOT NULL)",
)


async def apply_postgres(conn: Any) -> list[str]:
    """Apply pending PostgreSQL migrations in one transaction under an advisory lock; return the names applied now."""
    async with conn.transaction():
        # One lock per schema (search_path): concurrent starters queue here instead of racing to create tables.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.daehwa_migrations'))")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (name text PRIMARY KEY, applied_at timestamptz NOT NULL)"
        )
        done = {row["name"] for row in await conn.fetch(f"SELECT name FROM {MIGRATIONS_TABLE}")}
        applied = []
        for step in postgres_migrations.steps:
            if step.__name__ in done:
                continue
            await step(conn)
            await conn.execute(f"INSERT INTO {MIGRATIONS_TABLE} (name, applied_at) VALUES ($1, now())", step.__name__)
            applied.append(step.__name__)
    return applied
