"""`studioops backup ...`: create, list, verify, restore, undo and prune archives of the database and objects."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import typer

from studioops.cli.output import console, emit_json, fail, human_bytes, plural, say, settings, table

app = typer.Typer(help="Backups of the database and every object: create, list, verify, restore, undo, prune.",
                  no_args_is_help=True)


def _notes(notes: list[str]) -> None:
    """What settling did first (an interrupted restore finished or rolled back, leftovers removed): stderr."""
    for note in notes:
        say(f"studioops: {note}", stderr=True)


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
    _notes(result.notes)
    if as_json:
        emit_json(result.as_dict())
        return
    rows = sum(t["rows"] for t in result.tables.values())
    say(f"created {result.path} ({human_bytes(result.size)}) in {result.seconds:.1f}s: "
              f"{plural(len(result.tables), 'table')}, {plural(rows, 'row')}, "
              f"{plural(result.objects, 'object')} ({human_bytes(result.object_bytes)})")
    if result.uploaded:
        say(f"uploaded to {result.uploaded}")
    for name in result.pruned:
        say(f"pruned {name}")


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print the result as JSON.")) -> None:
    """Every archive, local and in the backups bucket, newest first."""
    from studioops.backup import list_backups, settle

    s = settings()
    notes = settle(s, leftovers=False)
    _notes(notes)
    listed = list_backups(s)
    listed.notes = notes
    if as_json:
        emit_json(listed.as_dict())
    else:
        table(None, ["archive", "kind", "size", "where", "verified"], [
            [r["name"], r["kind"], human_bytes(r["size"]),
             " + ".join(x for x, present in (("local", r["local"]), ("bucket", r["bucket"])) if present),
             (r["verified_at"] or "")[:19]] for r in listed.rows])
    if listed.bucket_error:
        fail(f"the backups bucket could not be read, so only local archives are listed: {listed.bucket_error}")


@app.command("verify")
def verify(
    archive: str = typer.Argument(..., help="An archive path or name, or `latest`."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Check every checksum, restore into a scratch database, compare every table with the manifest."""
    from studioops.backup import verify_backup

    with _progress(not as_json) as progress:
        result = verify_backup(settings(), archive, progress=progress)
    _notes(result.notes)
    if as_json:
        emit_json(result.as_dict())
        return
    rows = sum(t["rows"] for t in result.tables.values())
    say(f"verified {result.archive.name}: {plural(result.members_checked, 'checksum')}, "
        f"{plural(len(result.tables), 'table')} ({plural(rows, 'row')}) restored and identical, "
        f"{plural(result.objects, 'object')}, "
        f"{result.seconds:.1f}s")


@app.command("restore")
def restore(
    archive: str = typer.Argument(..., help="An archive path or name, or `latest`."),
    force: bool = typer.Option(False, "--force", help="Replace a database and buckets that hold data."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the archive and say what would be restored."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Restore the database and the objects from an archive (checksums are verified first; what it replaces is
    kept in a pre-restore archive that `backup undo` brings back)."""
    from studioops.backup import restore_backup

    with _progress(not as_json) as progress:
        result = restore_backup(settings(), archive, force=force, dry_run=dry_run, progress=progress)
    _notes(result.notes)
    _show_restore(result, as_json)


def _show_restore(result, as_json: bool) -> None:
    if as_json:
        emit_json(result.as_dict())
        return
    rows = sum(t["rows"] for t in result.tables.values())
    verb = "would restore" if result.dry_run else "restored"
    extra = f", {'would delete' if result.dry_run else 'deleted'} {plural(result.deleted_objects, 'object')} not " \
        "in the archive" if result.deleted_objects else ""
    say(f"{verb} {result.archive.name}: {plural(len(result.tables), 'table')} ({plural(rows, 'row')}), "
        f"{plural(result.objects, 'object')} ({human_bytes(result.object_bytes)}){extra}")
    if result.dry_run and result.holds_data:
        say(f"the target holds data ({result.holds_data}): restoring needs --force, and keeps a pre-restore "
            "archive of it first")
    if result.pre_restore:
        say(f"the state before the restore is kept in {result.pre_restore} (`studioops backup undo` brings it "
            "back)")


@app.command("undo")
def undo(as_json: bool = typer.Option(False, "--json", help="Print the result as JSON.")) -> None:
    """Undo a restore: settle an interrupted one, else bring back the newest pre-restore archive."""
    from studioops.backup import undo as undo_restore

    with _progress(not as_json) as progress:
        notes, result = undo_restore(settings(), progress=progress)
    if result is None:
        if as_json:
            emit_json({"notes": notes, "restored": None})
        else:
            for note in notes:
                say(note)
        return
    _notes(notes)
    _show_restore(result, as_json)


@app.command("prune")
def prune(as_json: bool = typer.Option(False, "--json", help="Print the result as JSON.")) -> None:
    """Apply retention (BACKUP_KEEP_DAILY, BACKUP_KEEP_WEEKLY) locally and in the bucket."""
    from studioops.backup import prune_backups, settle

    s = settings()
    _notes(settle(s))
    deleted = prune_backups(s, settled=True)
    if as_json:
        emit_json({"deleted": deleted})
        return
    for name in deleted:
        say(f"pruned {name}")
    if not deleted:
        say("nothing to prune")
