"""One S3 interface over boto3, for the embedded SeaweedFS and any other endpoint (MinIO, AWS S3, R2).

Path-style addressing; streamed transfers with multipart above a threshold, so a large file never sits in memory;
errors become one clear line without the secret key.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from studioops.config import Settings
from studioops.errors import (
    BadUsageError,
    ObjectNotFoundError,
    StorageAuthError,
    StorageError,
    StorageUnavailableError,
)
from studioops.storage.keys import validate_bucket, validate_key
from studioops.storage.layout import LAYOUT

_CACHE: dict[tuple, Storage] = {}
_CACHE_LOCK = threading.Lock()
MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_CHUNK = 16 * 1024 * 1024
STREAM_CHUNK = 1024 * 1024
STALE_UPLOAD_SECONDS = 86400  # incomplete multipart uploads older than this belong to a dead process
BUCKET_SEEN_SECONDS = 5.0
_NOT_FOUND = {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    last_modified: str
    content_type: str | None = None


@dataclass(frozen=True)
class BucketUsage:
    """Objects and their bytes per bucket; folder markers (zero-byte `prefix/` keys) and incomplete multipart
    uploads counted apart."""

    bucket: str
    objects: int
    bytes: int
    folders: int = 0
    incomplete_uploads: int = 0


@dataclass(frozen=True)
class IncompleteUpload:
    bucket: str
    key: str
    upload_id: str
    initiated: str


def _check(bucket: str, key: str) -> None:
    """Refuse a bad bucket or key before any request."""
    validate_bucket(bucket)
    validate_key(key)


def endpoint_url(settings: Settings) -> str:
    endpoint = settings.minio_endpoint
    if "://" in endpoint:
        return endpoint
    return ("https://" if settings.minio_secure else "http://") + endpoint


class Storage:
    """The S3 operations StudioOps needs. Build with `Storage.from_settings(get_settings())`."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, region: str = "us-east-1",
                 timeout: float = 10.0) -> None:
        import boto3
        from botocore.config import Config

        self.endpoint = endpoint
        self.access_key = access_key
        self._seen_buckets: dict[str, float] = {}
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=region,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                connect_timeout=timeout,
                read_timeout=max(timeout, 60),
                retries={"max_attempts": 3, "mode": "standard"},
                # Plain payload signing: aws-chunked trailing checksums are not spoken by every S3 server.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                max_pool_connections=16,
            ),
        )

    @classmethod
    def from_settings(cls, settings: Settings, timeout: float = 10.0) -> Storage:
        """A shared client per endpoint and credentials: building one loads botocore's models (~100 ms),
        and boto3 clients are thread-safe."""
        key = (endpoint_url(settings), settings.minio_access_key, settings.minio_secret_key.get_secret_value(),
               settings.minio_region, timeout)
        with _CACHE_LOCK:
            if key not in _CACHE:
                _CACHE[key] = cls(*key)
            return _CACHE[key]

    # -- errors -------------------------------------------------------------------------------------------
    def _explain(self, exc: Exception, what: str) -> StorageError:
        from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

        if isinstance(exc, EndpointConnectionError | ReadTimeoutError) or "Could not connect" in str(exc):
            return StorageUnavailableError(
                f"cannot reach the S3 endpoint {self.endpoint} ({what}). Start it with `studioops up`, "
                "or check MINIO_ENDPOINT"
            )
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AuthorizationHeaderMalformed",
                        "InvalidSignature"} or (status == 403 and code in {"403", "AccessDenied"}):
                return StorageAuthError(
                    f"the S3 endpoint {self.endpoint} refused the credentials of access key '{self.access_key}' "
                    f"({code or status}) while trying to {what}. Check MINIO_ACCESS_KEY and MINIO_SECRET_KEY"
                )
            if code in _NOT_FOUND:
                return ObjectNotFoundError(
                    f"{what}: not found ({code}). Check the bucket and key (`studioops storage ls`)"
                )
            message = exc.response.get("Error", {}).get("Message", "")
            return StorageError(f"S3 refused to {what}: {code} {message}".rstrip() + ". Check the request")
        return StorageError(f"S3 request failed ({what}): {exc}")

    def _call(self, what: str, fn: Callable[[], Any], bucket: str | None = None) -> Any:
        """Run one request; its failure becomes a StorageError. With `bucket`, a "not found" says whether it is
        the bucket that is missing."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn()
        except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
            raise self._error(exc, what, bucket) from None

    def _error(self, exc: Exception, what: str, bucket: str | None = None) -> StorageError:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        # boto3's upload_file wraps the server's answer in S3UploadFailedError: explain the answer.
        cause = exc.__context__ if isinstance(exc, S3UploadFailedError) else exc
        error = self._explain(cause if isinstance(cause, ClientError | BotoCoreError) else exc, what)
        code = cause.response.get("Error", {}).get("Code") if isinstance(cause, ClientError) else None
        if bucket and isinstance(error, ObjectNotFoundError) and (
                code == "NoSuchBucket" or not self._bucket_exists(bucket)):
            return self._no_bucket(bucket)
        return error

    # -- buckets ------------------------------------------------------------------------------------------
    def list_buckets(self) -> list[str]:
        return [b["Name"] for b in self._call("list buckets", self.client.list_buckets).get("Buckets", [])]

    def ensure_bucket(self, bucket: str) -> bool:
        """Create `bucket` if missing; True when it was created."""
        from botocore.exceptions import ClientError

        validate_bucket(bucket)
        try:
            self.client.head_bucket(Bucket=bucket)
            return False
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in {"404", "NoSuchBucket", "NotFound"}:
                raise self._explain(exc, f"check bucket {bucket}") from None
        self._call(f"create bucket {bucket}", lambda: self.client.create_bucket(Bucket=bucket))
        return True

    def head_bucket(self, bucket: str) -> None:
        self._call(f"head bucket {bucket}", lambda: self.client.head_bucket(Bucket=bucket), bucket)

    def _bucket_exists(self, bucket: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=bucket)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _NOT_FOUND:
                return False
            raise self._explain(exc, f"check bucket {bucket}") from None

    def _no_bucket(self, bucket: str) -> ObjectNotFoundError:
        try:
            names = ", ".join(self.list_buckets()) or "none"
        except StorageError:
            names = "unknown"
        return ObjectNotFoundError(
            f"no bucket '{bucket}' (buckets: {names}). Check the name; `studioops storage init` creates the "
            "configured buckets"
        )

    def require_bucket(self, bucket: str) -> None:
        """Refuse to write into a bucket that does not exist. Some servers (SeaweedFS) create a bucket on the
        first PUT, so a typo would silently make a new one; only `storage init` and `up` create buckets.
        A bucket seen to exist is trusted for a few seconds, so a restore of many objects costs one check."""
        validate_bucket(bucket)
        if time.monotonic() - self._seen_buckets.get(bucket, float("-inf")) < BUCKET_SEEN_SECONDS:
            return
        if not self._bucket_exists(bucket):
            raise self._no_bucket(bucket)
        self._seen_buckets[bucket] = time.monotonic()

    def init_layout(self, public_buckets: list[str] | None = None,
                    extra_buckets: list[str] | None = None) -> dict[str, list[str]]:
        """Create the document's buckets and folders (and `extra_buckets`, e.g. Langfuse's) and apply the
        access policies; returns what was created."""
        from studioops.storage.policy import apply_policies

        created: dict[str, list[str]] = {}
        for bucket, prefixes in LAYOUT.items():
            made = ["(bucket)"] if self.ensure_bucket(bucket) else []
            for prefix in prefixes:
                if self._head_or_none(bucket, prefix) is None:
                    self._call(f"create {bucket}/{prefix}",
                               lambda b=bucket, p=prefix: self.client.put_object(Bucket=b, Key=p, Body=b""))
                    made.append(prefix)
            if made:
                created[bucket] = made
        for bucket in [*(public_buckets or []), *(extra_buckets or [])]:
            if bucket not in LAYOUT and self.ensure_bucket(bucket):
                created[bucket] = ["(bucket)"]
        apply_policies(self, public_buckets or [])
        return created

    def wait_ready(self, timeout: float) -> None:
        """Wait until the endpoint answers a signed request; bounded."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.list_buckets()
                return
            except StorageUnavailableError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    # -- objects ------------------------------------------------------------------------------------------
    def _transfer_config(self):
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_CHUNK,
                              max_concurrency=4, use_threads=True)

    def put_file(self, path: Path, bucket: str, key: str, progress: Callable[[int], None] | None = None,
                 content_type: str | None = None) -> ObjectInfo:
        """Upload a file, streamed (multipart above 64 MB)."""
        _check(bucket, key)
        self.require_bucket(bucket)
        extra = {"ContentType": content_type} if content_type else None
        self._call(f"put {bucket}/{key}", lambda: self.client.upload_file(
            str(path), bucket, key, ExtraArgs=extra, Callback=progress, Config=self._transfer_config()))
        return self.head(bucket, key)

    def put_stream(self, stream: IO[bytes], bucket: str, key: str,
                   progress: Callable[[int], None] | None = None) -> None:
        """Upload from a readable binary stream of unknown length (multipart, chunk by chunk)."""
        _check(bucket, key)
        self.require_bucket(bucket)
        self._call(f"put {bucket}/{key}", lambda: self.client.upload_fileobj(
            stream, bucket, key, Callback=progress, Config=self._transfer_config()))

    def put_bytes(self, bucket: str, key: str, data: bytes) -> None:
        _check(bucket, key)
        self.require_bucket(bucket)
        self._call(f"put {bucket}/{key}", lambda: self.client.put_object(Bucket=bucket, Key=key, Body=data))

    def get_file(self, bucket: str, key: str, path: Path, progress: Callable[[int], None] | None = None) -> None:
        """Download to `path`, streamed; written to a temporary name first so a failure leaves no partial file."""
        _check(bucket, key)
        if not path.parent.is_dir():  # say so here, not through the temporary file's name
            raise BadUsageError(f"no directory {path.parent} to write {path.name} into. Create it first")
        tmp = path.with_name(f".{path.name}.part")
        try:
            self._call(f"get {bucket}/{key}", lambda: self.client.download_file(
                bucket, key, str(tmp), Callback=progress, Config=self._transfer_config()), bucket)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)

    def get_stream(self, bucket: str, key: str, out: IO[bytes],
                   progress: Callable[[int], None] | None = None) -> int:
        """Write one object to `out` in order, chunk by chunk; returns the bytes written.

        One GET streamed sequentially: s3transfer's threaded download_fileobj needs a seekable target and, on a
        pipe, stalls for ever once its in-memory window fills (seen at 160 MiB of a 300 MB object)."""
        from botocore.exceptions import BotoCoreError

        body = self.open(bucket, key)
        written = 0
        try:
            for chunk in body.iter_chunks(STREAM_CHUNK):
                out.write(chunk)
                written += len(chunk)
                if progress:
                    progress(len(chunk))
            out.flush()
        except BotoCoreError as exc:
            raise self._error(exc, f"get {bucket}/{key}") from None
        finally:
            body.close()
        return written

    def open(self, bucket: str, key: str) -> IO[bytes]:
        """A streaming body for one object (close it after reading)."""
        _check(bucket, key)
        return self._call(f"get {bucket}/{key}", lambda: self.client.get_object(Bucket=bucket, Key=key)["Body"],
                          bucket)

    def get_bytes(self, bucket: str, key: str) -> bytes:
        _check(bucket, key)
        return self._call(f"get {bucket}/{key}",
                          lambda: self.client.get_object(Bucket=bucket, Key=key)["Body"].read(), bucket)

    def _head_or_none(self, bucket: str, key: str) -> ObjectInfo | None:
        try:
            return self.head(bucket, key)
        except ObjectNotFoundError:
            return None

    def head(self, bucket: str, key: str) -> ObjectInfo:
        _check(bucket, key)
        r = self._call(f"head {bucket}/{key}", lambda: self.client.head_object(Bucket=bucket, Key=key), bucket)
        return ObjectInfo(key, r["ContentLength"], r["ETag"].strip('"'), r["LastModified"].isoformat(),
                          r.get("ContentType"))

    def delete(self, bucket: str, key: str) -> None:
        _check(bucket, key)
        self._call(f"delete {bucket}/{key}", lambda: self.client.delete_object(Bucket=bucket, Key=key), bucket)

    def copy(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str) -> None:
        _check(src_bucket, src_key)
        _check(dst_bucket, dst_key)
        self.require_bucket(dst_bucket)
        self._call(f"copy {src_bucket}/{src_key} to {dst_bucket}/{dst_key}", lambda: self.client.copy(
            {"Bucket": src_bucket, "Key": src_key}, dst_bucket, dst_key, Config=self._transfer_config()))

    def iter_objects(self, bucket: str, prefix: str = "", page_size: int = 1000) -> Iterator[ObjectInfo]:
        """Every object under `prefix`, following continuation tokens page by page."""
        validate_bucket(bucket)
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size})
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    yield ObjectInfo(item["Key"], item["Size"], item.get("ETag", "").strip('"'),
                                     item["LastModified"].isoformat())
        except Exception as exc:  # botocore raises while iterating pages
            from botocore.exceptions import BotoCoreError, ClientError

            if isinstance(exc, ClientError | BotoCoreError):
                raise self._error(exc, f"list {bucket}/{prefix}", bucket) from None
            raise

    def usage(self, buckets: list[str] | None = None) -> list[BucketUsage]:
        """Objects and bytes per bucket; folder markers and incomplete multipart uploads counted apart."""
        result = []
        for bucket in buckets if buckets is not None else self.list_buckets():
            count = size = folders = 0
            for obj in self.iter_objects(bucket):
                if obj.key.endswith("/") and obj.size == 0:
                    folders += 1
                    continue
                count += 1
                size += obj.size
            result.append(BucketUsage(bucket, count, size, folders, len(self.incomplete_uploads(bucket))))
        return result

    # -- incomplete multipart uploads -------------------------------------------------------------------------
    def incomplete_uploads(self, bucket: str, older_than: float = 0.0) -> list[IncompleteUpload]:
        """Multipart uploads begun and never completed nor aborted (their parts hold space until aborted);
        with `older_than`, only those initiated at least that many seconds ago."""
        from datetime import UTC, datetime

        found = []
        paginator = self.client.get_paginator("list_multipart_uploads")
        cutoff = time.time() - older_than
        try:
            for page in paginator.paginate(Bucket=bucket):
                for item in page.get("Uploads", []) or []:
                    initiated = item.get("Initiated") or datetime.now(UTC)
                    if older_than and initiated.timestamp() > cutoff:
                        continue
                    found.append(IncompleteUpload(bucket, item["Key"], item["UploadId"], initiated.isoformat()))
        except Exception as exc:  # botocore raises while iterating pages
            from botocore.exceptions import BotoCoreError, ClientError

            if isinstance(exc, ClientError | BotoCoreError):
                raise self._error(exc, f"list the incomplete uploads of {bucket}", bucket) from None
            raise
        return found

    def abort_stale_uploads(self, older_than: float = STALE_UPLOAD_SECONDS,
                            buckets: list[str] | None = None) -> list[IncompleteUpload]:
        """Abort incomplete multipart uploads initiated more than `older_than` seconds ago (a day by default:
        leftovers of killed uploads, never one still running); returns what was aborted."""
        aborted = []
        for bucket in buckets if buckets is not None else self.list_buckets():
            for upload in self.incomplete_uploads(bucket, older_than=older_than):
                self._call(f"abort the upload of {bucket}/{upload.key}",
                           lambda u=upload: self.client.abort_multipart_upload(
                               Bucket=u.bucket, Key=u.key, UploadId=u.upload_id))
                aborted.append(upload)
        return aborted

    def presign(self, bucket: str, key: str, expires: int = 3600, put: bool = False) -> str:
        """A URL anyone can GET (or PUT, with put=True) until it expires, without credentials."""
        _check(bucket, key)
        if not 1 <= expires <= 7 * 86400:
            raise BadUsageError(f"an expiry of {expires}s is out of range. S3 allows 1s to 7d")
        self.require_bucket(bucket)
        method = "put_object" if put else "get_object"
        return self.client.generate_presigned_url(method, Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires)

    # -- policies -------------------------------------------------------------------------------------------
    def get_policy(self, bucket: str) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            return json.loads(self.client.get_bucket_policy(Bucket=bucket)["Policy"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchBucketPolicy", "NoSuchPolicy", "404"}:
                return None
            raise self._explain(exc, f"read the policy of {bucket}") from None
