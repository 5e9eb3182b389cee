"""Env files and their secrets: `studioops env init` writes a .env with strong random secrets, and the production
guard refuses to run with a default or weak one.

The templates are `infra/env/development.env` and `infra/env/production.env.example` (shipped in the package too).
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from urllib.parse import quote, urlsplit

from studioops.config import Settings
from studioops.errors import ConfigError

TEMPLATES = Path(__file__).parent / "env_templates"
MIN_SECRET_LENGTH = 16

# Secrets `env init` generates, and the production guard checks, besides the password inside DATABASE_URL.
SECRET_VARIABLES = [
    "POSTGRES_PASSWORD", "MINIO_SECRET_KEY", "LANGFUSE_SECRET_KEY", "LANGFUSE_DB_PASSWORD", "LANGFUSE_SALT",
    "LANGFUSE_ENCRYPTION_KEY", "LANGFUSE_NEXTAUTH_SECRET", "LANGFUSE_INIT_USER_PASSWORD", "CLICKHOUSE_PASSWORD",
    "REDIS_PASSWORD", "CONSOLE_PASSWORD",
]
# Defaults and placeholders from the design document and our templates: never acceptable in production.
KNOWN_DEFAULTS = {"studioops", "studioops123", "your-secret-here", "your-langfuse-secret", "secure_password",
                  "secure_secret_key", "prod_access_key", "changeme", "password", "secret"}
PLACEHOLDER = re.compile(r"^(pk|sk)-lf-(|your-.*|development-.*|production-.*)$|your-|changeme|-dev-|^0+$")


def _weakness(value: str) -> str | None:
    if value in KNOWN_DEFAULTS:
        return "a documented default"
    if PLACEHOLDER.search(value):
        return "a placeholder"
    if len(value) < MIN_SECRET_LENGTH:
        return f"under {MIN_SECRET_LENGTH} characters"
    return None


def _file_values(path: Path) -> dict[str, str]:
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None} if path.exists() else {}


def weak_secrets(settings: Settings, environ: dict[str, str] | None = None) -> list[str]:
    """`VARIABLE (why)` for each default or weak secret in the settings, the environment and `.env`."""
    env = {**_file_values(Path(".env")), **(environ if environ is not None else os.environ)}
    found = []
    db = settings.db
    why = _weakness(db.password) if db.password else "empty"
    if why:
        found.append(f"DATABASE_URL password ({why})")
    for name in SECRET_VARIABLES:
        if name == "MINIO_SECRET_KEY":
            value = settings.minio_secret_key.get_secret_value()
        elif name == "CONSOLE_PASSWORD":
            value = settings.console_password.get_secret_value()  # required: the console shows everything
        elif name == "LANGFUSE_SECRET_KEY":
            value = settings.langfuse_secret_key.get_secret_value()
            if not value:
                continue  # Langfuse off: no secret to judge
        else:
            value = env.get(name)
            if value is None:
                continue  # a Compose-only secret that this process does not use
        why = _weakness(value) if value else "empty"
        if why:
            found.append(f"{name} ({why})")
    if settings.langfuse_public_key and PLACEHOLDER.search(settings.langfuse_public_key):
        found.append("LANGFUSE_PUBLIC_KEY (a placeholder)")
    return found


def guard_production(settings: Settings, environ: dict[str, str] | None = None) -> None:
    """With STUDIOOPS_ENV=production, refuse default or weak secrets, naming each offending variable."""
    if settings.studioops_env != "production":
        return
    found = weak_secrets(settings, environ)
    if found:
        raise ConfigError(
            "STUDIOOPS_ENV=production refuses default or weak secrets: " + ", ".join(found)
            + ". Generate strong ones with `studioops env init --production --force`, or set them in the environment"
        )


def _random_secret(name: str) -> str:
    if name == "LANGFUSE_ENCRYPTION_KEY":
        return secrets.token_hex(32)  # Langfuse requires 64 hex characters
    return secrets.token_urlsafe(32)


def render(template: str, values: dict[str, str]) -> str:
    """The template with `values` substituted for its KEY=... lines; comments and order kept."""
    out = []
    for line in template.splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=", line)
        if match and match[1] in values:
            line = f"{match[1]}={values[match[1]]}"
        out.append(line)
    return "\n".join(out) + "\n"


def init_env(path: Path, production: bool = False, force: bool = False) -> dict[str, str]:
    """Write `path` (.env) from a template with fresh random secrets; returns the names it generated."""
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists. Keep it, or overwrite it with --force (its secrets are lost)")
    template = (TEMPLATES / ("production.env.example" if production else "development.env")).read_text()
    current = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", template, flags=re.M))
    values = {name: _random_secret(name) for name in SECRET_VARIABLES}
    values["MINIO_ACCESS_KEY"] = f"studioops-{secrets.token_hex(6)}"  # not secret, but no placeholder either
    values["LANGFUSE_PUBLIC_KEY"] = f"pk-lf-{secrets.token_hex(16)}"
    values["LANGFUSE_SECRET_KEY"] = f"sk-lf-{secrets.token_hex(16)}"
    # One set of credentials: DATABASE_URL carries the generated POSTGRES_PASSWORD.
    parts = urlsplit(current["DATABASE_URL"])
    user = current.get("POSTGRES_USER") or parts.username
    netloc = f"{quote(user, safe='')}:{quote(values['POSTGRES_PASSWORD'], safe='')}@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    values["DATABASE_URL"] = parts._replace(netloc=netloc).geturl()
    path.write_text(render(template, values))
    path.chmod(0o600)
    return {k: "generated" for k in values}
