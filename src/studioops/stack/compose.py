"""The Compose stack: `studioops up|down|logs --compose` drive `docker compose` with the project's files.

Production (STUDIOOPS_ENV=production) uses infra/docker-compose.prod.yaml; STUDIOOPS_COMPOSE_FILE overrides.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from studioops.config import Settings
from studioops.errors import StudioOpsError


class DockerUnavailableError(StudioOpsError):
    """No docker client, no compose plugin, or no engine to talk to."""


def compose_file(settings: Settings) -> Path:
    if settings.studioops_compose_file:
        path = settings.studioops_compose_file
    else:
        name = "docker-compose.prod.yaml" if settings.studioops_env == "production" else "docker-compose.yaml"
        path = Path("infra") / name
    if not path.is_file():
        raise StudioOpsError(f"no Compose file at {path}. Run from the repository root, or set STUDIOOPS_COMPOSE_FILE")
    return path.absolute()


def check_engine() -> str:
    """The docker client's path once it has been shown to reach an engine; one clear error otherwise."""
    docker = shutil.which("docker")
    if not docker:
        raise DockerUnavailableError(
            "the docker client is not installed, so --compose cannot work here. Install Docker, "
            "or use the embedded stack: `studioops up`"
        )
    try:
        info = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                              timeout=15)
    except subprocess.TimeoutExpired:
        raise DockerUnavailableError("the Docker engine did not answer within 15s. Check that it runs") from None
    if info.returncode != 0 or not info.stdout.strip():
        reason = " ".join((info.stderr or info.stdout).split())[:200] or "no answer"
        raise DockerUnavailableError(
            f"no Docker engine is running ({reason}). Start Docker, or use the embedded stack: `studioops up`"
        )
    return docker


def compose(settings: Settings, *args: str) -> None:
    """Run `docker compose -f FILE [--env-file .env] ARGS` (after checking the engine)."""
    docker = check_engine()
    command = [docker, "compose", "-f", str(compose_file(settings))]
    if Path(".env").is_file():
        command += ["--env-file", str(Path(".env").absolute())]
    result = subprocess.run([*command, *args])
    if result.returncode != 0:
        raise StudioOpsError(f"docker compose {' '.join(args)} failed (exit {result.returncode}). "
                             "Its output above says why; `studioops logs --compose` shows the services' logs")


def up(settings: Settings, timeout: float = 300) -> None:
    compose(settings, "up", "-d", "--wait", "--wait-timeout", str(int(timeout)))


def down(settings: Settings) -> None:
    compose(settings, "down")


def logs(settings: Settings, service: str | None = None, follow: bool = False) -> None:
    compose(settings, "logs", *(["-f"] if follow else []), *([service] if service else []))
