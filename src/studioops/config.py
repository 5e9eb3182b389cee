"""One typed Settings object, read from the environment and `.env` (pydantic-settings).

Defaults follow the design document's development values; secrets are redacted whenever settings are shown.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import SplitResult, unquote, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from studioops.errors import ConfigError

DEFAULT_DATABASE_URL = "postgresql://studioops:studioops123@localhost:5432/studioops"
PACKAGE_MIGRATIONS_DIR = Path(__file__).parent / "db" / "migrations"
REDACTED = "***"
BACKUP_BUCKET = "backups"  # where backup archives are uploaded: never anonymously readable
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})  # served by the embedded stack


class Settings(BaseSettings):
    """Every setting StudioOps reads. Field names are the environment variable names, case-insensitive."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    studioops_home: Path = Field(Path(".studioops"), description="embedded data, logs, pid files, backups")
    studioops_env: Literal["development", "production"] = "development"
    studioops_run_as: str = Field("studioops", description="system user that runs the servers as root")
    studioops_migrations_dir: Path = PACKAGE_MIGRATIONS_DIR
    studioops_compose_file: Path | None = Field(None, description="default infra/docker-compose[.prod].yaml")
    migration_lock_timeout: float = Field(10.0, gt=0, description="seconds a migration waits for a table lock")

    database_url: SecretStr = SecretStr(DEFAULT_DATABASE_URL)

    minio_endpoint: str = "localhost:9000"
    minio_access_key: str = "studioops"
    minio_secret_key: SecretStr = SecretStr("studioops123")
    minio_secure: bool = False
    minio_region: str = "us-east-1"
    minio_console_port: int = Field(9001, ge=0, le=65535, description="the S3 console (SeaweedFS's admin UI) on "
                                    "127.0.0.1, login with the S3 keys; 0 turns it off")
    storage_public_buckets: str = ""
    storage_extra_buckets: str = Field("", description="more private buckets `storage init` creates")

    langfuse_public_key: str = ""
    langfuse_secret_key: SecretStr = SecretStr("")
    langfuse_host: str = "http://localhost:3100"
    backup_dir: Path | None = Field(None, description="local backup archives; default $STUDIOOPS_HOME/backups")
    backup_keep_daily: int = Field(7, ge=0)
    backup_keep_weekly: int = Field(4, ge=0)
    backup_upload: bool = Field(True, description="also upload each archive to the backups bucket")
    backup_zstd_level: int = Field(3, ge=1, le=22)
    observability_local_store: bool = Field(True, description="record traces in the local trace store")
    observability_queue_size: int = Field(10000, ge=1, description="traces held before new ones are dropped")
    console_password: SecretStr = Field(SecretStr(""), description="console login password (required in production)")
    console_session_ttl: str = Field("12h", description="how long a console login lasts (a duration)")
    observability_prices_file: Path | None = Field(None, description="model prices that add to or override "
                                                   "Langfuse's defaults (JSON)")

    @field_validator("studioops_migrations_dir", "backup_dir", "studioops_compose_file", "observability_prices_file",
                     mode="before")
    @classmethod
    def _empty_means_default(cls, value, info):
        # An empty line in .env (as the templates have) means "the default", not the current directory.
        if value is None or (isinstance(value, str) and not value.strip()):
            return PACKAGE_MIGRATIONS_DIR if info.field_name == "studioops_migrations_dir" else None
        return value

    @field_validator("storage_public_buckets")
    @classmethod
    def _backups_stay_private(cls, value: str) -> str:
        if BACKUP_BUCKET in {b.strip().lower() for b in value.split(",")}:
            raise ConfigError(
                f"STORAGE_PUBLIC_BUCKETS names the {BACKUP_BUCKET} bucket, which holds the whole database: anyone "
                f"could download it. Remove {BACKUP_BUCKET} from STORAGE_PUBLIC_BUCKETS"
            )
        return value

    @field_validator("console_session_ttl")
    @classmethod
    def _check_duration(cls, value: str) -> str:
        try:
            seconds = parse_duration(value)
        except ConfigError:
            seconds = 0
        if seconds <= 0:
            raise ConfigError(f"CONSOLE_SESSION_TTL '{value}' is not a positive duration. Write it as 30m, 12h or 7d")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr) -> SecretStr:
        parse_database_url(value.get_secret_value())
        return value

    # -- derived values ---------------------------------------------------------------------------------
    @property
    def home(self) -> Path:
        return self.studioops_home.expanduser().absolute()

    @property
    def langfuse_enabled(self) -> bool:
        """Langfuse tracing is on when both keys are set."""
        return bool(self.langfuse_public_key and self.langfuse_secret_key.get_secret_value())

    @property
    def console_session_seconds(self) -> float:
        return parse_duration(self.console_session_ttl)

    @property
    def backups(self) -> Path:
        return (self.backup_dir.expanduser().absolute() if self.backup_dir else self.home / "backups")

    @property
    def db(self) -> DatabaseURL:
        return parse_database_url(self.database_url.get_secret_value())

    def shown(self) -> dict[str, str]:
        """Every setting as text, secrets redacted: what `status` and logs may print."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name == "database_url":
                out[name.upper()] = redact_url(value.get_secret_value())
            elif isinstance(value, SecretStr):
                out[name.upper()] = REDACTED if value.get_secret_value() else ""
            else:
                out[name.upper()] = str(value)
        return out

    def __repr__(self) -> str:
        return f"Settings({self.shown()!r})"

    __str__ = __repr__


class DatabaseURL:
    """The parts of a `postgresql://` URL. `str()` gives the redacted form; `.url` the real one."""

    def __init__(self, url: str, parts: SplitResult) -> None:
        self.url = url
        self.user = unquote(parts.username or "")
        self.password = unquote(parts.password or "")
        self.host = parts.hostname or "localhost"
        self.port = parts.port or 5432
        self.dbname = unquote(parts.path.lstrip("/")) or self.user

    @property
    def is_local(self) -> bool:
        return self.host in LOCAL_HOSTS

    def with_database(self, dbname: str) -> str:
        """The same URL pointing at another database (for scratch and maintenance connections)."""
        parts = urlsplit(self.url)
        return parts._replace(path="/" + dbname).geturl()

    def __str__(self) -> str:
        return redact_url(self.url)


URL_FORM = "Use the form postgresql://USER:PASSWORD@HOST:PORT/DBNAME"
# RFC 3986 userinfo: unreserved, sub-delims, ':' and %XX escapes. Anything else in a password must be encoded.
_USERINFO = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:]|%[0-9A-Fa-f]{2})*")


def parse_database_url(url: str) -> DatabaseURL:
    """Parse and check DATABASE_URL; a malformed one is a ConfigError that never shows any part of the password."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        raise ConfigError(f"DATABASE_URL has no scheme: it must start with postgresql://. {URL_FORM}")
    if scheme not in {"postgresql", "postgres"}:
        shown = scheme if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,20}", scheme) else "something else"
        raise ConfigError(f"DATABASE_URL must start with postgresql://, not {shown}://. {URL_FORM}")
    # The user and password end at the last '@' (hosts, paths and query strings hold none): whatever a URL
    # parser would cut at a stray '#', '?', '/', '@' or space is still in there, and is refused whole.
    userinfo = rest.rpartition("@")[0]
    if not _USERINFO.fullmatch(userinfo):
        raise ConfigError(
            "DATABASE_URL's user or password holds characters that must be percent-encoded in a URL (such as "
            "% @ # / ? or a space). Encode the password with urllib.parse.quote(password, safe='') and put the "
            "result in the URL"
        )
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError:
        raise ConfigError(f"DATABASE_URL has an invalid host or port: {redact_url(url)}. {URL_FORM}") from None
    if not parts.username:
        raise ConfigError(f"DATABASE_URL names no user: {redact_url(url)}. {URL_FORM}")
    return DatabaseURL(url, parts)


_PASSWORD_IN_URL = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?P<tail>@)")


def redact_url(url: str) -> str:
    """Replace the password of any URL in `url` with ***: safe to print or log."""
    return _PASSWORD_IN_URL.sub(lambda m: m["head"] + REDACTED + m["tail"], url)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, built on first use so that `--help` needs no environment."""
    try:
        return Settings()
    except ValidationError as exc:  # (our own validators raise ConfigError, which pydantic lets through)
        first = exc.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise ConfigError(f"{name} is invalid: {first['msg']}. Fix it in the environment or .env") from None


def reset_settings() -> None:
    """Forget the cached settings (tests, and commands that change the environment)."""
    get_settings.cache_clear()


def parse_duration(text: str) -> float:
    """Seconds in a duration written `30s`, `15m`, `1h`, `7d` (a bare number is seconds)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise ConfigError(f"'{text}' is not a duration. Write it as 30s, 15m, 1h or 7d")
    number, unit = float(match[1]), match[2] or "s"
    return number * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
