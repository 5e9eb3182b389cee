"""`studioops db ...`: the database URL, migrations and seed data."""

from __future__ import annotations

import typer

from studioops.cli.output import emit_json, say, settings, table

app = typer.Typer(help="The database: URL, migrations, seed data.", no_args_is_help=True)


def _migrator():
    from studioops.db.migrate import Migrator

    s = settings()
    return Migrator.from_settings(s)


@app.command("url")
def url() -> None:
    """Print the full DATABASE_URL, password included (for psql "$(studioops db url)")."""
    print(settings().database_url.get_secret_value())


@app.command("migrate")
def migrate(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list the files that would be applied."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Apply pending migrations, each in its own transaction, under a lock."""
    from studioops.envfile import guard_production

    guard_production(settings())
    progress = None if as_json else (lambda name, secs: say(f"applied {name} ({secs * 1000:.0f} ms)"))
    names = _migrator().migrate(dry_run=dry_run, on_progress=progress)
    if as_json:
        emit_json({"dry_run": dry_run, "migrations": names})
    elif dry_run:
        say("would apply: " + ", ".join(names) if names else "nothing to apply")
    elif not names:
        say("nothing to apply: the database is up to date")


@app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="Print the result as JSON.")) -> None:
    """Applied, pending, drifted and failed migrations; exit 1 when anything is pending, drifted or failed."""
    result = _migrator().status()
    if as_json:
        emit_json(result.as_dict())
    else:
        rows = []
        for m in result.applied:
            state = "failed" if not m.success else ("drifted" if m.filename in result.drifted else "applied")
            if m.filename in result.missing:
                state += " (file missing)"
            rows.append([m.filename, state, m.executed_at.strftime("%Y-%m-%d %H:%M:%S %Z"), m.duration_ms])
        rows += [[name, "pending", "", ""] for name in result.pending]
        table(None, ["migration", "state", "applied at", "ms"], rows)
        say(f"head: {result.head or 'none'}")
    if not result.ok:
        raise typer.Exit(1)


@app.command("new")
def new(name: str = typer.Argument(..., help="What the migration does, e.g. add_invoices.")) -> None:
    """Create the next numbered migration file from a template."""
    from studioops.db.migrate import new_migration

    path = new_migration(settings().studioops_migrations_dir, name)
    print(path)


@app.command("repair")
def repair(as_json: bool = typer.Option(False, "--json", help="Print the result as JSON.")) -> None:
    """Accept edited migration files (re-record checksums) and forget failed runs."""
    result = _migrator().repair()
    if as_json:
        emit_json({"rechecksummed": result.rechecksummed, "forgotten_failures": result.forgotten_failures})
        return
    for name in result.rechecksummed:
        say(f"accepted the edit of {name} (checksum re-recorded)")
    for name in result.forgotten_failures:
        say(f"forgot the failed run of {name}; `studioops db migrate` will run it again")
    if not (result.rechecksummed or result.forgotten_failures):
        say("nothing to repair")


@app.command("seed")
def seed(
    reset: bool = typer.Option(False, "--reset", help="Empty the app tables first (asks for confirmation)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Load sample studio data (idempotent: running it twice adds nothing)."""
    from studioops.db import seed as seed_module
    from studioops.errors import ConfirmationRequiredError

    s = settings()
    if reset and not yes:
        import sys

        if not sys.stdin.isatty():
            raise ConfirmationRequiredError(
                "--reset deletes every row of the app tables and needs a confirmation. Add --yes to confirm"
            )
        if not typer.confirm(f"Delete every row of {', '.join(seed_module.APP_TABLES)} in {s.db}?"):
            say("cancelled")
            raise typer.Exit(1)
    result = seed_module.seed(s.db, reset=reset)
    if as_json:
        emit_json({"inserted": result.inserted, "total": result.total})
    else:
        detail = ", ".join(f"{k} {v}" for k, v in result.inserted.items() if v)
        say(f"seeded {result.total} row(s)" + (f": {detail}" if detail else " (already seeded)"))
