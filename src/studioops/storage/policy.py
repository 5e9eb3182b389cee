"""Bucket access policies: every bucket private; named buckets anonymously readable, never writable.

Real S3 bucket policies, enforced by the server; uploads from outside go through expiring presigned PUT URLs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


def public_read_policy(bucket: str) -> dict:
    """Anonymous GetObject on every key of `bucket`; nothing else (no list, no write)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PublicRead",
                "Effect": "Allow",
                "Principal": {"AWS": ["*"]},
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{bucket}/*"],
            }
        ],
    }


@dataclass(frozen=True)
class BucketPolicy:
    bucket: str
    access: str  # private | public-read
    policy: dict | None

    def as_dict(self) -> dict:
        return {"bucket": self.bucket, "access": self.access, "policy": self.policy}


def parse_buckets(value: str) -> list[str]:
    return [b.strip() for b in value.split(",") if b.strip()]


def apply_policies(storage, public_buckets: list[str]) -> list[BucketPolicy]:
    """Make every bucket private except `public_buckets` (public-read); returns the resulting policies."""
    from botocore.exceptions import ClientError

    result = []
    for bucket in storage.list_buckets():
        if bucket in public_buckets:
            policy = public_read_policy(bucket)
            storage._call(f"set the policy of {bucket}", lambda b=bucket, p=policy: storage.client.put_bucket_policy(
                Bucket=b, Policy=json.dumps(p)))
            result.append(BucketPolicy(bucket, "public-read", policy))
        else:
            try:
                storage.client.delete_bucket_policy(Bucket=bucket)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in {"NoSuchBucketPolicy", "404"}:
                    raise storage._explain(exc, f"make {bucket} private") from None
            result.append(BucketPolicy(bucket, "private", None))
    return result


def show_policies(storage) -> list[BucketPolicy]:
    """Each bucket's access as the server holds it."""
    out = []
    for bucket in storage.list_buckets():
        policy = storage.get_policy(bucket)
        readable = policy is not None and any(
            s.get("Effect") == "Allow" and "s3:GetObject" in _list(s.get("Action")) for s in policy.get("Statement", [])
        )
        out.append(BucketPolicy(bucket, "public-read" if readable else "private", policy))
    return out


def _list(value) -> list:
    return value if isinstance(value, list) else [value]
