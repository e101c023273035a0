"""Process ids for tests of what killed writers leave behind."""

from __future__ import annotations

import subprocess
import sys


def dead_pid() -> int:
    """The id of a process that has ended (a killed writer's, as far as a temp file name can tell)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid
