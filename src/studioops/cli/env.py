"""`studioops env init`: a .env with strong random secrets, from the development or production template."""

from __future__ import annotations

from pathlib import Path

import typer

from studioops.cli.output import say

app = typer.Typer(help="Environment files: write a .env with strong random secrets.", no_args_is_help=True)


@app.command("init")
def init(
    production: bool = typer.Option(False, "--production", help="From the production template."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file (its secrets are lost)."),
    path: Path = typer.Option(Path(".env"), "--path", help="Where to write it."),
) -> None:
    """Write a .env from infra/env's template with fresh random secrets (mode 0600)."""
    from studioops.envfile import init_env

    before = _settings_from(path)
    generated = init_env(path, production=production, force=force)
    say(f"wrote {path} ({'production' if production else 'development'}) with "
        f"{len(generated)} fresh secrets: {', '.join(sorted(generated))}")
    if path.absolute() == Path(".env").absolute():  # only ./.env is read by the next command
        _warn_about_running_stack(before, _settings_from(path))


def _settings_from(path: Path):
    from studioops.config import Settings
    from studioops.errors import StudioOpsError

    try:
        return Settings(_env_file=path)
    except (StudioOpsError, ValueError):
        return None


def _warn_about_running_stack(before, after) -> None:
    """The embedded servers keep the credentials they were started with: say what changed and what applies it,
    before `health` finds out the hard way."""
    from studioops.stack import status

    if before is None or after is None:
        return
    changed = []
    if (before.db.user, before.db.password) != (after.db.user, after.db.password):
        changed.append("DATABASE_URL's user or password")
    if before.minio_access_key != after.minio_access_key:
        changed.append("MINIO_ACCESS_KEY")
    if before.minio_secret_key != after.minio_secret_key:
        changed.append("MINIO_SECRET_KEY")
    running = [s.name for s in status(before) if s.state == "running"]
    if changed and running:
        say(f"warning: the running stack ({', '.join(running)} under {before.home}) still uses the old "
            f"{', '.join(changed)}: commands now fail against it until `studioops down && studioops up` "
            "applies the new ones", stderr=True)
    if after.langfuse_enabled and not before.langfuse_enabled:
        say(f"note: LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY turn tracing on, to {after.langfuse_host}; "
            "`studioops health` reports observability degraded until a Langfuse server answers there", stderr=True)
