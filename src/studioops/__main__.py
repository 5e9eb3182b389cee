"""`python -m studioops` runs the CLI."""

from studioops.cli import main

main()
