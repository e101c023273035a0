"""Process ids for tests of what killed writers leave behind."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable


def dead_pid() -> int:
    """The id of a process that has ended (a killed writer's, as far as a temp file name can tell)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def run_as_nobody(run: Callable[[], object]) -> str:
    """``run()`` in a forked child, as the unprivileged 'nobody' when this is root (file modes bind root only through
    its capabilities): the error it ended with (``"TypeName: message"``), or ``"no error"``.

    The child always ends with ``os._exit``, whatever happens in it: a forked copy of a pytest worker that went on
    running would talk to pytest-xdist on its parent's channel.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            message = b"no error"
            try:
                if os.geteuid() == 0:
                    os.setgid(65534)
                    os.setuid(65534)
                run()
            except BaseException as err:  # noqa: BLE001 - the child reports any error to the test
                message = f"{type(err).__name__}: {err}".encode()
            os.write(write, message)
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as pipe:
        return pipe.read().decode()
