"""`studioops up | down | status | logs`: the embedded stack's lifecycle."""

from __future__ import annotations

import typer

from studioops.cli.output import duration, emit_json, say, settings, table


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("down")(down)
    app.command("status")(status)
    app.command("logs")(logs)
    app.command("clean")(clean)


def _render_services(services) -> None:
    rows = []
    for s in services:
        versions = ", ".join(f"{k} {v}" for k, v in s.versions.items())
        head = s.details.get("migration_head") or s.details.get("error", "")
        rows.append([s.name, s.state, s.pid, s.address, versions, head, s.data_dir])
    table(None, ["service", "state", "pid", "address", "versions", "migrations", "data"], rows)
    for s in services:
        if s.details.get("settings"):
            say(f"{s.name} settings: " + ", ".join(f"{k} {v}" for k, v in s.details["settings"].items()))


def up(
    timeout: str = typer.Option("30s", "--timeout", help="How long to wait for each service (30s, 2m)."),
    use_compose: bool = typer.Option(False, "--compose", help="Start the Docker Compose stack instead."),
    seed: bool = typer.Option(False, "--seed", help="Load the sample data into a database created by this run."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Start the embedded stack, apply pending migrations, and print what runs where."""
    from studioops import stack

    wait = duration(timeout, "--timeout")
    if use_compose:
        from studioops.envfile import guard_production
        from studioops.stack import compose

        guard_production(settings())
        compose.up(settings(), timeout=max(wait, 120))
        return
    result = stack.up(settings(), timeout=wait, seed=seed)
    if as_json:
        emit_json(result.as_dict())
        return
    for note in result.notes:
        say(f"note: {note}")
    if result.already_running and not result.started:
        say(f"already running: {', '.join(result.already_running)}")
    elif result.started:
        say(f"started {', '.join(result.started)} in {result.seconds:.2f}s")
    if result.migrations_applied:
        say(f"applied {len(result.migrations_applied)} migration(s): {', '.join(result.migrations_applied)}")
    if result.seeded:
        say(f"seeded the new database with {result.seeded} sample rows (studioops db seed --reset to reload)")
    if result.buckets_created:
        say(f"created buckets and folders: {', '.join(result.buckets_created)}")
    _render_services(result.services)
    db = settings().db
    say(f"DATABASE_URL={db}   (full URL: studioops db url)")
    if result.console_link:
        say(f"console: {result.console_link}   (one-time login link; studioops console prints a new one)")


def down(
    timeout: str = typer.Option("30s", "--timeout", help="How long to wait for a clean stop."),
    use_compose: bool = typer.Option(False, "--compose", help="Stop the Docker Compose stack instead."),
) -> None:
    """Stop the embedded stack (exit 0 when it is already stopped)."""
    from studioops import stack

    wait = duration(timeout, "--timeout")
    if use_compose:
        from studioops.stack import compose

        compose.down(settings())
        return

    stopped = stack.down(settings(), timeout=wait)
    say(f"stopped {', '.join(stopped)}" if stopped else "already stopped")


def status(as_json: bool = typer.Option(False, "--json", help="Print the result as JSON.")) -> None:
    """Each service: state, pid, address, data dir, versions, migration head (exit 1 unless all run)."""
    from studioops import stack

    services = stack.status(settings())
    if as_json:
        emit_json({"services": [s.as_dict() for s in services]})
    else:
        _render_services(services)
    # `off`: a companion turned off by its setting, or whose port was taken (up said so); not a failure.
    if not all(s.state in {"running", "external", "off"} for s in services):
        raise typer.Exit(1)


def logs(
    service: str = typer.Argument(None, help="postgres, s3 or console (with --compose: any service; default all)."),
    follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing new lines."),
    lines: int = typer.Option(50, "-n", "--lines", help="How many of the last lines to show first."),
    use_compose: bool = typer.Option(False, "--compose", help="The Docker Compose stack's logs."),
) -> None:
    """Print a service's log (the last lines; -f follows it)."""
    import sys
    import time

    from studioops import stack
    from studioops.errors import StudioOpsError
    from studioops.stack.process import tail

    if use_compose:
        from studioops.stack import compose

        compose.logs(settings(), service, follow)
        return
    path = stack.log_path(settings(), service or "postgres")
    if not path.exists():
        raise StudioOpsError(f"no log yet at {path}. Start the stack with `studioops up`")
    text = tail(path, lines)
    if text:
        print(text)
    if not follow:
        return
    with path.open("rb") as handle:
        handle.seek(0, 2)
        try:
            while True:
                chunk = handle.read()
                if chunk:
                    sys.stdout.write(chunk.decode("utf-8", "replace"))
                    sys.stdout.flush()
                else:
                    time.sleep(0.2)
        except KeyboardInterrupt:
            return


def clean(
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    include_backups: bool = typer.Option(False, "--include-backups", help="Delete the local backups too."),
) -> None:
    """Stop the stack and delete all embedded data under STUDIOOPS_HOME (local backups are kept)."""
    import sys

    from studioops import stack
    from studioops.errors import ConfirmationRequiredError

    s = settings()
    if not yes:
        if not sys.stdin.isatty():
            raise ConfirmationRequiredError(
                f"clean deletes all data under {s.home} and needs a confirmation. Add --yes to confirm"
            )
        kept = "" if include_backups else f" (backups in {s.backups} are kept)"
        answer = input(f"This will remove all data in {s.home}{kept}. Are you sure? (y/N): ")
        if answer.strip().lower() not in {"y", "yes"}:
            say("Operation cancelled")
            raise typer.Exit(1)
    removed = stack.clean(s, include_backups=include_backups)
    say(f"removed {len(removed)} item(s) under {s.home}" if removed else "nothing to remove")
