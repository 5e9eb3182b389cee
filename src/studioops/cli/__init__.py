"""The `studioops` command: a thin Typer app over the library. Parse, call, render; no logic here.

Library modules are imported inside each command so that `studioops --help` stays fast.
"""

from __future__ import annotations

import functools
import os
import sys

import typer
from typer.models import DefaultPlaceholder

from studioops.cli import backup as backup_commands
from studioops.cli import console as console_commands
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
console_commands.register(app)
app.add_typer(db_commands.app, name="db")
app.add_typer(storage_commands.app, name="storage")
app.add_typer(backup_commands.app, name="backup")
app.add_typer(env_commands.app, name="env")
app.add_typer(traces_commands.app, name="traces")

# The production guard (weak or default secrets with STUDIOOPS_ENV=production) runs before every command except
# these, which neither read nor change data: `env init` writes the strong secrets the guard asks for, `down` stops
# processes, `status` shows which run where, `logs` prints their logs. A new command is guarded unless added here.
NO_DATA_ACCESS = frozenset({"env init", "down", "status", "logs"})


def _guarded(callback):
    @functools.wraps(callback)
    def run(*args, **kwargs):
        from studioops.config import get_settings
        from studioops.envfile import guard_production

        guard_production(get_settings())
        return callback(*args, **kwargs)

    return run


def _guard_commands(typer_app: typer.Typer, prefix: str = "") -> None:
    """Wrap the callback of every command of `typer_app` and its groups in the production guard."""
    for command in typer_app.registered_commands:
        path = prefix + (command.name or command.callback.__name__.replace("_", "-"))
        if path not in NO_DATA_ACCESS:
            command.callback = _guarded(command.callback)
    for group in typer_app.registered_groups:
        path = prefix + (group.name or group.typer_instance.info.name or "")
        # A group's own callback (one that runs without a subcommand, say) is guarded too, unless a command
        # under it needs no data access: the callback runs before that command.
        if not any(allowed.startswith(path + " ") for allowed in NO_DATA_ACCESS):
            for holder in (group, group.typer_instance.registered_callback):
                if holder is not None and callable(holder.callback) and not isinstance(holder.callback,
                                                                                         DefaultPlaceholder):
                    holder.callback = _guarded(holder.callback)
        _guard_commands(group.typer_instance, path + " ")


_guard_commands(app)


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
