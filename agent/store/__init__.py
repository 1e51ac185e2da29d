"""The incident store: what the agent saw, decided and did, kept across restarts and
shared by replicas. ``open_store`` picks the backend from the URL's scheme; nothing else
in the agent knows which database it talks to."""

from __future__ import annotations

from pathlib import Path

from agent.store.base import IncidentStore
from agent.store.sql import SQLStore


def open_store(
    url: str, *, create: bool = True, migrate: bool = True, read_only: bool = False
) -> IncidentStore:
    """Open (and migrate) the store at ``sqlite:///PATH`` or ``postgresql://...``.

    Without ``create`` (commands that only read or answer) a missing store is ``NoStore``:
    no file, no directory and no schema is made. Without ``migrate`` (a probe) an older
    schema is left as it is. ``read_only`` (the MCP server's reads) opens a connection the
    database itself refuses writes on, never creating or migrating anything. Each
    backend's driver is imported only when it is used: an agent on SQLite never loads
    psycopg.
    """
    create = create and not read_only
    if url.startswith("sqlite:///"):
        from agent.store.sqlite import SQLiteDialect

        path = Path(url.removeprefix("sqlite:///"))
        dialect = SQLiteDialect(path, create=create, read_only=read_only)
        return SQLStore(dialect, create=create, migrate=migrate, read_only=read_only)
    if url.startswith(("postgresql://", "postgres://")):
        from agent.store.postgres import PostgresDialect

        return SQLStore(
            PostgresDialect(url, read_only=read_only),
            create=create,
            migrate=migrate,
            read_only=read_only,
        )
    raise ValueError(f"unsupported store URL {url!r}")
