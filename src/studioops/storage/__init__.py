"""Object storage: one S3 interface for the embedded SeaweedFS and any external endpoint.

`Storage.from_settings(get_settings())` is the entry point; `layout` names the buckets; `policy` their access.
"""

from studioops.storage.client import BucketUsage, ObjectInfo, Storage, endpoint_url
from studioops.storage.keys import split_target, validate_bucket, validate_key

__all__ = ["BucketUsage", "ObjectInfo", "Storage", "endpoint_url", "split_target", "validate_bucket", "validate_key"]
