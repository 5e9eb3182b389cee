"""A test hook: `STUDIOOPS_TEST_PAUSE_AT=PHASE` makes a backup command stop at a named phase, so a test can
SIGKILL it exactly there. Unset (always, outside tests) it does nothing.

On reaching the phase the process writes `studioops: test hook: paused at PHASE (pid N)` to stderr and sleeps
(at most ten minutes), then carries on. Phases: backup-objects, verify-database, restore-database,
restore-objects, restore-swap (inside the swap transaction), restore-finish.
"""

from __future__ import annotations

import os
import sys
import time

PAUSE_ENV = "STUDIOOPS_TEST_PAUSE_AT"


def pause_at(phase: str) -> None:
    if os.environ.get(PAUSE_ENV) != phase:
        return
    sys.stderr.write(f"studioops: test hook: paused at {phase} (pid {os.getpid()})\n")
    sys.stderr.flush()
    time.sleep(600)
