"""`studioops backup ...`: create, list, verify, restore and prune archives of the database and the objects."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import typer

from studioops.cli.output import console, emit_json, human_bytes, say, settings, table

app = typer.Typer(help="Backups of the database and every object: create, list, verify, restore, prune.",
                  no_args_is_help=True)


@contextmanager
def _progress(enabled: bool):
    """A rich progress bar on stderr; yields the callback the library reports phases and bytes to."""
    import sys

    if not enabled or not sys.stderr.isatty():  # bars are for people; logs and pipes get the summary only
        yield lambda phase, done, total: None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  console=console(stderr=True), transient=True) as bar:
        tasks: dict[str, int] = {}

        def report(phase: str, done: int, total: int | None) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        yield report


@app.command("create")
def create(
    to: Path = typer.Option(None, "--to", help="Write the archive into this directory instead."),
    weekly: bool = typer.Option(False, "--weekly", help="A weekly archive (kept under weekly/)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Back up the database and every object (except the backups bucket) into one archive."""
    from studioops.backup import create_backup

    with _progress(not as_json) as progress:
        result = create_backup(settings(), to=to, weekly=weekly, progress=progress)
    if as_json:
        emit_json(result.as_dict())
        return
    rows = sum(t["rows"] for t in result.tables.values())
    say(f"created {result.path} ({human_bytes(result.size)}) in {result.seconds:.1f}s: "
              f"{len(result.tables)} tables, {rows} rows, "
              f"{result.objects} objects ({human_bytes(result.object_bytes)})")
    if result.uploaded:
        say(f"uploaded to {result.uploaded}")
    for name in result.pruned:
        say(f"pruned {name}")


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print the result as JSON.")) -> None:
    """Every archive, local and in the backups bucket, newest first."""
    from studioops.backup import list_backups

    rows = list_backups(settings())
    if as_json:
        emit_json({"backups": rows})
        return
    table(None, ["archive", "kind", "size", "where", "verified"], [
        [r["name"], r["kind"], human_bytes(r["size"]),
         " + ".join(x for x, present in (("local", r["local"]), ("bucket", r["bucket"])) if present),
         (r["verified_at"] or "")[:19]] for r in rows])


@app.command("verify")
def verify(
    archive: str = typer.Argument(..., help="An archive path or name, or `latest`."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Check every checksum, restore into a scratch database, compare every table with the manifest."""
    from studioops.backup import verify_backup

    with _progress(not as_json) as progress:
        result = verify_backup(settings(), archive, progress=progress)
    if as_json:
        emit_json(result.as_dict())
        return
    rows = sum(t["rows"] for t in result.tables.values())
    say(f"verified {result.archive.name}: {result.members_checked} checksums, {len(result.tables)} "
        f"tables ({rows} rows) restored and identical, {result.objects} objects, "
        f"{result.seconds:.1f}s")


@app.command("restore")
def restore(
    archive: str = typer.Argument(..., help="An archive path or name, or `latest`."),
    force: bool = typer.Option(False, "--force", help="Replace a database and buckets that hold data."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the archive and say what would be restored."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Restore the database and the objects from an archive (checksums are verified first)."""
    from studioops.backup import restore_backup

    with _progress(not as_json) as progress:
        result = restore_backup(settings(), archive, force=force, dry_run=dry_run, progress=progress)
    if as_json:
        emit_json(result.as_dict())
        return
    rows = sum(t["rows"] for t in result.tables.values())
    verb = "would restore" if dry_run else "restored"
    extra = f", {'would delete' if dry_run else 'deleted'} {result.deleted_objects} objects not in the archive" \
        if result.deleted_objects else ""
    say(f"{verb} {result.archive.name}: {len(result.tables)} tables ({rows} rows), "
        f"{result.objects} objects ({human_bytes(result.object_bytes)}){extra}")


@app.command("prune")
def prune(as_json: bool = typer.Option(False, "--json", help="Print the result as JSON.")) -> None:
    """Apply retention (BACKUP_KEEP_DAILY, BACKUP_KEEP_WEEKLY) locally and in the bucket."""
    from studioops.backup import prune_backups

    deleted = prune_backups(settings())
    if as_json:
        emit_json({"deleted": deleted})
        return
    for name in deleted:
        say(f"pruned {name}")
    if not deleted:
        say("nothing to prune")
