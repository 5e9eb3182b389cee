"""Object keys and `BUCKET/KEY` targets, validated before any request reaches the server.

A key must not be able to escape its prefix when mirrored to a file system (backups, `get`), nor confuse a client.
"""

from __future__ import annotations

import re

from studioops.errors import InvalidKeyError

MAX_KEY_BYTES = 1024
# Each segment becomes a file or directory name in SeaweedFS's filer (and in any mirror of a bucket on disk):
# most file systems cap a name at 255 bytes.
MAX_SEGMENT_BYTES = 255
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def validate_key(key: str) -> str:
    """Return `key` unchanged when it is safe; raise InvalidKeyError naming the problem otherwise."""
    shown = repr(key[:60] + ("..." if len(key) > 60 else ""))
    if not key:
        raise InvalidKeyError("the object key is empty. Give a key such as projects/brief.pdf")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidKeyError(
            f"the object key {shown} is {len(key.encode('utf-8'))} bytes of UTF-8; the limit is {MAX_KEY_BYTES}. "
            "Use a shorter key"
        )
    if key.startswith("/"):
        raise InvalidKeyError(f"the object key {shown} is an absolute path. Drop the leading '/'")
    if "\\" in key:
        raise InvalidKeyError(f"the object key {shown} contains a backslash. Use '/' to separate folders")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise InvalidKeyError(f"the object key {shown} contains a NUL or control character. Remove it")
    parts = key.split("/")
    if any(part in {"..", "."} for part in parts):
        raise InvalidKeyError(f"the object key {shown} contains a '.' or '..' segment. Use a plain path")
    # A trailing '/' is a folder marker ("projects/"); an empty segment inside ("a//b") names the same object as
    # "a/b" on SeaweedFS and a different one on AWS: refuse it rather than let the two disagree.
    if "" in parts[:-1]:
        raise InvalidKeyError(f"the object key {shown} contains an empty segment ('//'). Use a single '/'")
    longest = max(parts, key=lambda part: len(part.encode("utf-8")))
    if len(longest.encode("utf-8")) > MAX_SEGMENT_BYTES:
        raise InvalidKeyError(
            f"the object key {shown} has a segment of {len(longest.encode('utf-8'))} bytes of UTF-8; the limit is "
            f"{MAX_SEGMENT_BYTES} per segment (between '/'). Use shorter names"
        )
    return key


def validate_bucket(bucket: str) -> str:
    if not BUCKET_NAME.match(bucket) or ".." in bucket:
        raise InvalidKeyError(
            f"'{bucket}' is not a valid bucket name: 3-63 lower-case letters, digits, '.' and '-'. Check the name"
        )
    return bucket


def split_target(target: str, key_required: bool = True) -> tuple[str, str]:
    """`BUCKET/KEY` (or `BUCKET[/PREFIX]` with key_required=False) into its validated parts."""
    bucket, _, key = target.partition("/")
    validate_bucket(bucket)
    if key_required:
        validate_key(key)
    elif key:
        validate_key(key.rstrip("/") or key)
    return bucket, key
