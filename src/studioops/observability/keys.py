"""The key pair the ingestion API accepts: LANGFUSE_PUBLIC_KEY/SECRET_KEY, or a development pair.

When the keys are unset, the embedded console still asks for credentials: a random pair generated once per
STUDIOOPS_HOME into console/keys.json (0600), which `studioops up` prints.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import secrets
from pathlib import Path

from studioops.config import Settings


def keys_file(settings: Settings) -> Path:
    return settings.home / "console" / "keys.json"


def development_keys(settings: Settings, create: bool = True) -> tuple[str, str] | None:
    """The development pair of this STUDIOOPS_HOME (made on first use when `create`)."""
    path = keys_file(settings)
    try:
        doc = json.loads(path.read_text())
        return doc["public_key"], doc["secret_key"]
    except (OSError, ValueError, KeyError, TypeError):
        if not create:
            return None
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    pair = {"public_key": f"pk-lf-{secrets.token_hex(16)}", "secret_key": f"sk-lf-{secrets.token_hex(24)}"}
    tmp = path.with_name(f".keys-{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(pair, handle)
    try:
        os.link(tmp, path)  # first writer wins when two processes race
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return development_keys(settings, create=False)


def ingestion_keys(settings: Settings) -> tuple[str, str]:
    """The pair that the ingestion API accepts."""
    if settings.langfuse_enabled:
        return settings.langfuse_public_key, settings.langfuse_secret_key.get_secret_value()
    pair = development_keys(settings)
    assert pair is not None
    return pair


def basic_auth_matches(header: str | None, keys: tuple[str, str]) -> bool:
    """Whether an Authorization header carries exactly `keys` as HTTP Basic credentials (constant time)."""
    if not header or header[:6].lower() != "basic ":
        return False
    try:
        user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, ValueError):
        return False
    ok_user = hmac.compare_digest(user.encode(), keys[0].encode())
    ok_password = hmac.compare_digest(password.encode(), keys[1].encode())
    return ok_user and ok_password
