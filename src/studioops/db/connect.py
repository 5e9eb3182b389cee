"""Connections to PostgreSQL (psycopg 3) whose failures become one clear line without the password.

Every module that talks to the database opens its connections here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from studioops.config import DatabaseURL, redact_url
from studioops.errors import DatabaseUnavailableError


def explain_connect_error(exc: psycopg.Error, db: DatabaseURL) -> DatabaseUnavailableError:
    """Turn psycopg's connection error into what the user should do about it."""
    full = redact_url(" ".join(str(exc).split()) or type(exc).__name__)
    # psycopg says "connection failed: connection to server at ... failed: REASON [hint]": keep REASON.
    reason = full.rsplit(" failed: ", 1)[-1].split(" Is the server running")[0].rstrip(" .")
    where = f"{db.host}:{db.port}/{db.dbname}"
    if "password authentication failed" in reason or "no password supplied" in reason:
        hint = f"check the user and password in DATABASE_URL (user '{db.user}')"
    elif "does not exist" in reason and db.is_local:
        hint = "run `studioops up`: it creates the role and database named in DATABASE_URL on the embedded server"
    elif "does not exist" in reason:
        hint = (f"create it on {db.host} (a managed server: StudioOps does not create databases there), "
                "or point DATABASE_URL at an existing one")
    elif any(word in full for word in ("Connection refused", "timeout expired", "could not receive", "Is the server")):
        hint = ("start it with `studioops up`, or point DATABASE_URL at a running server" if db.is_local
                else f"check that the server at {db.host}:{db.port} runs and accepts connections from here")
    else:
        hint = "check DATABASE_URL and that the server is running (`studioops status`)"
    return DatabaseUnavailableError(f"cannot connect to the database at {where}: {reason}. To fix: {hint}")


def connect(
    db: DatabaseURL,
    *,
    dbname: str | None = None,
    autocommit: bool = False,
    timeout: float = 5.0,
    application_name: str = "studioops",
) -> psycopg.Connection:
    """Open a connection to `db` (or to another database on the same server)."""
    url = db.with_database(dbname) if dbname else db.url
    try:
        return psycopg.connect(
            url,
            autocommit=autocommit,
            connect_timeout=max(1, int(timeout)),
            application_name=application_name,
        )
    except psycopg.OperationalError as exc:
        raise explain_connect_error(exc, db) from None


@contextmanager
def borrow(db: DatabaseURL, pool=None, timeout: float = 2.0) -> Iterator[psycopg.Connection]:
    """A connection from `pool` when there is one (the API's), else a new autocommit one (the CLI's)."""
    if pool is not None:
        with pool.connection(timeout=timeout) as conn:
            yield conn
    else:
        with connect(db, autocommit=True, timeout=timeout) as conn:
            yield conn
