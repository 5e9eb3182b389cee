"""Who may see the console: one-time login links (as Jupyter's), signed session cookies, CSRF tokens, passwords.

The console shows prompts, outputs and the whole database, so nothing is shown without a login, even on loopback.
State lives under STUDIOOPS_HOME/console/ (0700): `secret` (0600) signs sessions and CSRF tokens, and each
unused login link is a 0600 file named by its token's sha256 under `tokens/`. Redeeming a link deletes its file,
so a link works once, across processes (the CLI that printed it and the server that redeems it share nothing
else). Deleting `secret` (or changing CONSOLE_PASSWORD, when set) logs every session out.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

from studioops.config import Settings

TOKEN_TTL = 600.0  # seconds a login link stays valid once printed
COOKIE_PREFIX = "studioops_console"


def console_dir(settings: Settings) -> Path:
    """STUDIOOPS_HOME/console, created 0700 (other users of the machine must not read it)."""
    path = settings.home / "console"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


def _write_new(path: Path, data: bytes) -> bool:
    """Create `path` (0600) with `data`; False when it already exists (another process won the race)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return True


def secret(settings: Settings) -> bytes:
    """The key that signs sessions and CSRF tokens. Derived from CONSOLE_PASSWORD when it is set, so replicas
    of the API agree without sharing a file (and changing the password logs everyone out); otherwise the
    random `console/secret`, created on first use."""
    password = settings.console_password.get_secret_value()
    if password:
        return hmac.new(password.encode(), b"studioops-console-signing-key", hashlib.sha256).hexdigest().encode()
    path = console_dir(settings) / "secret"
    if not path.exists():
        _write_new(path, secrets.token_hex(32).encode())
    value = path.read_bytes().strip()
    if len(value) < 32:  # an emptied or truncated file: never sign with a guessable key
        path.unlink(missing_ok=True)
        _write_new(path, secrets.token_hex(32).encode())
        value = path.read_bytes().strip()
    return value


def _sign(key: bytes, purpose: str, message: str) -> str:
    return hmac.new(key, f"{purpose}:{message}".encode(), hashlib.sha256).hexdigest()


# -- one-time login links ---------------------------------------------------------------------------------
def _tokens_dir(settings: Settings) -> Path:
    path = console_dir(settings) / "tokens"
    path.mkdir(exist_ok=True, mode=0o700)
    return path


def issue_token(settings: Settings) -> str:
    """A new one-time login token, valid for TOKEN_TTL seconds. Expired unused ones are swept."""
    folder = _tokens_dir(settings)
    now = time.time()
    for old in folder.iterdir():
        with contextlib.suppress(OSError):
            if now - old.stat().st_mtime > TOKEN_TTL:
                old.unlink()
    token = secrets.token_urlsafe(32)
    _write_new(folder / hashlib.sha256(token.encode()).hexdigest(), b"")
    return token


def redeem_token(settings: Settings, token: str) -> bool:
    """True once for a valid, unexpired token: its file is deleted, so a second use (or a copy) fails."""
    if not token or len(token) > 200:
        return False
    path = _tokens_dir(settings) / hashlib.sha256(token.encode()).hexdigest()
    try:
        age = time.time() - path.stat().st_mtime
        path.unlink()  # only one redeemer can delete it
    except FileNotFoundError:
        return False
    return age <= TOKEN_TTL


def console_url(settings: Settings) -> str:
    """Where the console is served: the `console` service on LANGFUSE_HOST's address."""
    return settings.langfuse_host.rstrip("/")


def login_link(settings: Settings, base_url: str | None = None) -> str:
    """A link that logs a browser in once (what `studioops console` and `up` print)."""
    return f"{(base_url or console_url(settings)).rstrip('/')}/login?token={issue_token(settings)}"


# -- sessions and CSRF ----------------------------------------------------------------------------------------
def cookie_name(port: int | None) -> str:
    """Cookies ignore ports: name ours after the port so two consoles on one host keep their own logins."""
    return f"{COOKIE_PREFIX}_{port}" if port else COOKIE_PREFIX


def new_session(settings: Settings, now: float | None = None) -> str:
    """A signed cookie value `ID.EXPIRES.SIGNATURE` that expires after CONSOLE_SESSION_TTL."""
    expires = int((now or time.time()) + settings.console_session_seconds)
    sid = secrets.token_urlsafe(18)
    return f"{sid}.{expires}.{_sign(secret(settings), 'session', f'{sid}.{expires}')}"


def check_session(settings: Settings, value: str | None, now: float | None = None) -> str | None:
    """The session id of a valid, unexpired cookie value; None otherwise."""
    if not value or value.count(".") != 2:
        return None
    sid, expires, signature = value.split(".")
    if not expires.isdigit() or int(expires) < (now or time.time()):
        return None
    expected = _sign(secret(settings), "session", f"{sid}.{expires}")
    return sid if hmac.compare_digest(signature, expected) else None


def csrf_token(settings: Settings, sid: str) -> str:
    """The CSRF token of a session: every POST must carry it (form field `csrf` or header X-CSRF-Token)."""
    return _sign(secret(settings), "csrf", sid)


def check_csrf(settings: Settings, sid: str, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(token, csrf_token(settings, sid))


def check_password(settings: Settings, given: str) -> bool:
    """True when CONSOLE_PASSWORD is set and `given` matches it (constant time)."""
    wanted = settings.console_password.get_secret_value()
    return bool(wanted) and hmac.compare_digest(given.encode(), wanted.encode())
