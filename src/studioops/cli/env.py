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

    generated = init_env(path, production=production, force=force)
    say(f"wrote {path} ({'production' if production else 'development'}) with "
        f"{len(generated)} fresh secrets: {', '.join(sorted(generated))}")
