"""`studioops storage ...`: buckets, objects, presigned URLs and policies on any S3 endpoint."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import typer

from studioops.cli.output import console, duration, emit_json, human_bytes, plural, say, settings, table

app = typer.Typer(help="Object storage (S3): buckets, objects, presigned URLs, policies.", no_args_is_help=True)

PROGRESS_MIN_BYTES = 8 * 1024 * 1024


def _storage():
    from studioops.storage import Storage

    return Storage.from_settings(settings())


@contextmanager
def _progress(label: str, total: int):
    """A progress bar on stderr for transfers over a few MB; yields the callback boto3 calls with byte counts."""
    import sys

    if total < PROGRESS_MIN_BYTES or not sys.stderr.isatty():  # bars are for people, not for logs and pipes
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


@app.command("init")
def init(
    timeout: str = typer.Option("30s", "--timeout", help="How long to wait for the endpoint."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Create the buckets and folders, apply the access policies, and abort incomplete multipart uploads older
    than a day (waits for the endpoint)."""
    from dataclasses import asdict

    from studioops.storage.policy import parse_buckets, show_policies

    wait = duration(timeout, "--timeout")
    storage = _storage()
    storage.wait_ready(wait)
    s = settings()
    created = storage.init_layout(parse_buckets(s.storage_public_buckets),
                                  parse_buckets(s.storage_extra_buckets))
    aborted = storage.abort_stale_uploads()
    policies = show_policies(storage)
    if as_json:
        emit_json({"created": created, "aborted_uploads": [asdict(u) for u in aborted],
                   "policies": [p.as_dict() for p in policies]})
        return
    for bucket, items in created.items():
        say(f"{bucket}: created {', '.join(items)}")
    if aborted:
        say(f"aborted {plural(len(aborted), 'incomplete multipart upload')} older than a day: "
            + ", ".join(f"{u.bucket}/{u.key}" for u in aborted))
    say("buckets: " + ", ".join(f"{p.bucket} ({p.access})" for p in policies))


@app.command("ls")
def ls(
    target: str = typer.Argument(None, help="BUCKET or BUCKET/PREFIX; nothing lists the buckets."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """List buckets, or the objects of a bucket under a prefix (all pages)."""
    from dataclasses import asdict

    from studioops.storage import split_target

    storage = _storage()
    if not target:
        buckets = storage.list_buckets()
        if as_json:
            emit_json({"buckets": buckets})
        else:
            for b in buckets:
                print(b)
        return
    bucket, prefix = split_target(target, key_required=False)
    objects = list(storage.iter_objects(bucket, prefix))
    if as_json:
        emit_json({"bucket": bucket, "prefix": prefix, "objects": [asdict(o) for o in objects]})
        return
    for o in objects:
        print(f"{o.last_modified[:19]}  {o.size:>12}  {o.key}")


@app.command("put")
def put(
    file: Path = typer.Argument(..., help="Local file to upload."),
    target: str = typer.Argument(..., help="BUCKET/KEY"),
    content_type: str = typer.Option(None, "--content-type", help="Content-Type to store with the object."),
) -> None:
    """Upload a file (streamed, multipart above 64 MB)."""
    from studioops.errors import BadUsageError
    from studioops.storage import split_target

    bucket, key = split_target(target)
    if not file.exists():
        raise BadUsageError(f"no such file: {file}. Give the path of a file to upload")
    if not file.is_file():
        kind = "a directory" if file.is_dir() else "not a regular file (a device, pipe or socket)"
        raise BadUsageError(f"{file} is {kind}. Give the path of a regular file to upload")
    with _progress(f"put {key}", file.stat().st_size) as progress:
        info = _storage().put_file(file, bucket, key, progress=progress, content_type=content_type)
    say(f"uploaded {bucket}/{key} ({human_bytes(info.size)})")


@app.command("get")
def get(
    target: str = typer.Argument(..., help="BUCKET/KEY"),
    file: str = typer.Argument(None, help="Where to write it (default: the key's file name here; - for stdout)."),
) -> None:
    """Download an object (streamed; never a partial file on failure)."""
    import sys

    from studioops.storage import split_target

    bucket, key = split_target(target)
    storage = _storage()
    if file == "-":
        storage.get_stream(bucket, key, sys.stdout.buffer)
        return
    info = storage.head(bucket, key)
    path = Path(file) if file else Path(key.rsplit("/", 1)[-1] or "download")
    if path.is_dir():
        path = path / key.rsplit("/", 1)[-1]
    with _progress(f"get {key}", info.size) as progress:
        storage.get_file(bucket, key, path, progress=progress)
    say(stderr=True, text=f"downloaded {bucket}/{key} to {path} ({human_bytes(info.size)})")


@app.command("rm")
def rm(target: str = typer.Argument(..., help="BUCKET/KEY")) -> None:
    """Delete an object."""
    from studioops.storage import split_target

    bucket, key = split_target(target)
    storage = _storage()
    storage.head(bucket, key)  # say "not found" rather than succeed silently
    storage.delete(bucket, key)
    say(f"deleted {bucket}/{key}")


@app.command("usage")
def usage(as_json: bool = typer.Option(False, "--json", help="Print the result as JSON.")) -> None:
    """Objects and bytes per bucket (folder markers and incomplete multipart uploads counted apart)."""
    from dataclasses import asdict

    rows = _storage().usage()
    if as_json:
        emit_json({"buckets": [asdict(r) for r in rows]})
        return
    table(None, ["bucket", "objects", "bytes", "size", "folders", "incomplete uploads"],
          [[r.bucket, r.objects, r.bytes, human_bytes(r.bytes), r.folders, r.incomplete_uploads] for r in rows])
    stale = sum(r.incomplete_uploads for r in rows)
    if stale:
        say(f"{plural(stale, 'incomplete multipart upload')} hold space until aborted; `studioops storage init` "
            "aborts those older than a day")


@app.command("presign")
def presign(
    target: str = typer.Argument(..., help="BUCKET/KEY"),
    put: bool = typer.Option(False, "--put", help="A URL to upload to (HTTP PUT) instead of download from."),
    expires: str = typer.Option("1h", "--expires", help="How long the URL works: 30s, 15m, 1h, 7d at most."),
) -> None:
    """Print a presigned URL (alone on its line) that works without credentials until it expires."""
    from studioops.storage import split_target

    bucket, key = split_target(target)
    seconds = int(duration(expires, "--expires"))
    print(_storage().presign(bucket, key, expires=seconds, put=put))


@app.command("policy")
def policy(as_json: bool = typer.Option(False, "--json", help="Print the result as JSON.")) -> None:
    """Show each bucket's access policy as the server enforces it."""
    from studioops.storage.policy import show_policies

    policies = show_policies(_storage())
    if as_json:
        emit_json({"buckets": [p.as_dict() for p in policies]})
        return
    rows = [[p.bucket, p.access, "anonymous GET of objects" if p.access == "public-read" else "signed requests only"]
            for p in policies]
    table(None, ["bucket", "access", "means"], rows)
