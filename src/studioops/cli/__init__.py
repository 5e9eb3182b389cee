"""The `studioops` command: a thin Typer app over the library. Parse, call, render; no logic here.

Library modules are imported inside each command so that `studioops --help` stays fast.
"""

from __future__ import annotations

import os
import sys

import typer

from studioops.cli import backup as backup_commands
from studioops.cli import db as db_commands
from studioops.cli import env as env_commands
from studioops.cli import ops as ops_commands
from studioops.cli import stack as stack_commands
from studioops.cli import storage as storage_commands
from studioops.cli import traces as traces_commands
from studioops.cli.output import fail

app = typer.Typer(
    name="studioops",
    help="StudioOps infra: embedded PostgreSQL + pgvector and S3, migrations, seed data and operations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks (for bug reports).", envvar="STUDIOOPS_DEBUG"),
) -> None:
    """StudioOps infra: embedded PostgreSQL + pgvector and S3, migrations, seed data and operations."""
    if debug:
        os.environ["STUDIOOPS_DEBUG"] = "1"


stack_commands.register(app)
ops_commands.register(app)
app.add_typer(db_commands.app, name="db")
app.add_typer(storage_commands.app, name="storage")
app.add_typer(backup_commands.app, name="backup")
app.add_typer(env_commands.app, name="env")
app.add_typer(traces_commands.app, name="traces")


def main() -> None:
    """Entry point: run the app; a failure the user can fix becomes one line on stderr and an exit code."""
    from studioops.errors import StudioOpsError

    try:
        app()
    except StudioOpsError as exc:
        if os.environ.get("STUDIOOPS_DEBUG", "") not in {"", "0"}:
            raise
        fail(str(exc), exc.exit_code)
    except OSError as exc:
        if os.environ.get("STUDIOOPS_DEBUG", "") not in {"", "0"}:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        fail(f"{exc.strerror or exc}{where}. Check the path and its permissions", 1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
