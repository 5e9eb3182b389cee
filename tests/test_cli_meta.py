"""Every command has help text and appears in README.md."""

from __future__ import annotations

from pathlib import Path

import typer.main

from studioops.cli import app

README = (Path(__file__).parent.parent / "README.md").read_text()


def all_commands(group, prefix: str = "studioops") -> list[tuple[str, object]]:
    found = []
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        found.append((path, command))
        if hasattr(command, "commands"):  # a group (typer vendors its own click)
            found += all_commands(command, path)
    return found


def test_every_command_has_help_and_is_in_the_readme():
    commands = all_commands(typer.main.get_command(app))
    assert len(commands) >= 10
    for path, command in commands:
        assert (command.help or "").strip(), f"{path} has no help text"
        assert f"`{path}" in README, f"{path} is not documented in README.md"


def test_help_works_with_no_environment(tmp_path):
    import os
    import subprocess
    import sys

    env = {"PATH": os.environ["PATH"], "DATABASE_URL": "not a url at all"}
    result = subprocess.run([sys.executable, "-m", "studioops", "--help"], capture_output=True, text=True, env=env,
                            cwd=tmp_path)
    assert result.returncode == 0 and "Usage" in result.stdout
