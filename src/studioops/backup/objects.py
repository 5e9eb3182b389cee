"""Objects in and out of archives with their headers: Content-Type, Cache-Control, Content-Disposition,
Content-Encoding, Content-Language and user metadata (`x-amz-meta-*`) are kept in the manifest and restored."""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, Any

from studioops.storage import validate_bucket, validate_key
from studioops.storage.layout import LAYOUT

HEADERS = ("ContentType", "CacheControl", "ContentDisposition", "ContentEncoding", "ContentLanguage")


def open_with_headers(storage, bucket: str, key: str) -> tuple[IO[bytes], dict[str, Any]]:
    """A streaming body for one object and the headers to restore it with."""
    validate_bucket(bucket)
    validate_key(key)
    response = storage._call(f"get {bucket}/{key}", lambda: storage.client.get_object(Bucket=bucket, Key=key))
    headers: dict[str, Any] = {h: response[h] for h in HEADERS if response.get(h)}
    if response.get("Metadata"):
        headers["Metadata"] = dict(response["Metadata"])
    return response["Body"], headers


def put_with_headers(storage, stream: IO[bytes], bucket: str, key: str, headers: dict[str, Any] | None) -> None:
    """Upload a stream (multipart when large) with the headers it was backed up with."""
    validate_bucket(bucket)
    validate_key(key)
    extra = {k: v for k, v in (headers or {}).items() if k in HEADERS or k == "Metadata"} or None
    storage._call(f"put {bucket}/{key}", lambda: storage.client.upload_fileobj(
        stream, bucket, key, ExtraArgs=extra, Config=storage._transfer_config()))


def existing_objects(storage, buckets: list[str]) -> dict[tuple[str, str], int]:
    """Objects now in `buckets` (folder markers of the standard layout excluded): what counts as data."""
    present = set(storage.list_buckets())
    out = {}
    for bucket in buckets:
        if bucket not in present:
            continue
        for obj in storage.iter_objects(bucket):
            if obj.size == 0 and obj.key in LAYOUT.get(bucket, []):
                continue
            out[(bucket, obj.key)] = obj.size
    return out


def put_all(storage, reader, buckets: list[str], progress: Callable[[str, int, int | None], None],
            after_first: Callable[[], None] | None = None) -> int:
    """Upload every object of the archive into its bucket and delete the objects of `buckets` it does not
    hold; returns how many were deleted. Idempotent: running it again after an interruption gives the same."""
    objects = reader.manifest["objects"]
    wanted = {(o["bucket"], o["key"]) for o in objects}
    for bucket in sorted({o["bucket"] for o in objects} | set(buckets)):
        storage.ensure_bucket(bucket)
    total = sum(o["size"] for o in objects)
    done = 0
    progress("objects", 0, total)
    for index, obj in enumerate(objects):
        put_with_headers(storage, reader.open_member(obj["member"]), obj["bucket"], obj["key"], obj.get("headers"))
        done += obj["size"]
        progress("objects", done, total)
        if index == 0 and after_first:
            after_first()
    extra = [k for k in existing_objects(storage, buckets) if k not in wanted]
    for bucket, key in extra:
        storage.delete(bucket, key)
    return len(extra)
