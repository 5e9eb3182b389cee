"""Browsing buckets page by page, and bucket usage counted in the background.

S3 has no cheap "how many objects" call: counting means listing every key (about 1,000 per request). The console
cannot wait for 100,000 objects on every page view, so `UsageCounter` lists in a background thread and serves the
last complete count (with its age), or the running partial count labelled as an estimate (a lower bound).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from studioops.storage.client import ObjectInfo, Storage
from studioops.storage.keys import validate_bucket


@dataclass
class ListingPage:
    bucket: str
    prefix: str
    folders: list[str]
    objects: list[ObjectInfo]
    next_token: str | None

    def as_dict(self) -> dict:
        return {"bucket": self.bucket, "prefix": self.prefix, "folders": self.folders,
                "objects": [o.__dict__ for o in self.objects], "next": self.next_token}


def list_page(storage: Storage, bucket: str, prefix: str = "", token: str | None = None,
              limit: int = 100) -> ListingPage:
    """One page of `prefix`'s direct children: sub-folders (common prefixes) and objects, in key order."""
    validate_bucket(bucket)
    args = {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/", "MaxKeys": max(1, min(limit, 1000))}
    if token:
        args["ContinuationToken"] = token
    r = storage._call(f"list {bucket}/{prefix}", lambda: storage.client.list_objects_v2(**args))
    folders = [p["Prefix"] for p in r.get("CommonPrefixes", [])]
    objects = [ObjectInfo(o["Key"], o["Size"], o.get("ETag", "").strip('"'), o["LastModified"].isoformat())
               for o in r.get("Contents", []) if o["Key"] != prefix]  # the folder's own marker
    return ListingPage(bucket, prefix, folders, objects, r.get("NextContinuationToken") if r.get("IsTruncated")
                       else None)


@dataclass
class BucketCount:
    bucket: str
    objects: int
    bytes: int
    complete: bool  # False: a count in progress, a lower bound
    counted_at: float | None  # when the last complete count finished (time.time())
    error: str | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class _State:
    last: BucketCount | None = None
    running: BucketCount | None = None
    started: float = 0.0
    thread: threading.Thread | None = field(default=None, repr=False)


class UsageCounter:
    """Objects and bytes per bucket, recounted in the background when older than `max_age` seconds."""

    def __init__(self, storage: Storage, max_age: float = 60.0) -> None:
        self.storage = storage
        self.max_age = max_age
        self._states: dict[str, _State] = {}
        self._lock = threading.Lock()

    def _count(self, bucket: str, state: _State) -> None:
        running = state.running
        try:
            for obj in self.storage.iter_objects(bucket):
                running.objects += 1
                running.bytes += obj.size
            done = BucketCount(bucket, running.objects, running.bytes, True, time.time())
        except Exception as exc:
            from studioops.errors import one_line

            done = BucketCount(bucket, running.objects, running.bytes, False, None, one_line(exc, 200))
        with self._lock:
            state.last, state.running, state.thread = done, None, None

    def get(self, bucket: str) -> BucketCount:
        """The freshest figure: the last complete count, or the running one (complete=False)."""
        with self._lock:
            state = self._states.setdefault(bucket, _State())
            stale = state.last is None or state.last.counted_at is None or \
                time.time() - state.last.counted_at > self.max_age
            if stale and state.thread is None:
                state.running = BucketCount(bucket, 0, 0, False, None)
                state.thread = threading.Thread(target=self._count, args=(bucket, state), daemon=True,
                                                name=f"count-{bucket}")
                state.thread.start()
            if state.last is not None and state.last.error is None:
                return state.last
            running = state.running or state.last
            return BucketCount(bucket, running.objects, running.bytes, False, None,
                               state.last.error if state.last else None)

    def wait(self, bucket: str, timeout: float) -> BucketCount:
        """Block until a complete count of `bucket` exists (tests and benchmarks); bounded."""
        deadline = time.monotonic() + timeout
        while True:
            count = self.get(bucket)
            if count.complete or time.monotonic() > deadline:
                return count
            time.sleep(0.05)
