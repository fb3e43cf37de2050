"""The OS-specific calls, each with a portable path chosen by what the OS offers, not by its name.

Linux has ``fdatasync``, ``O_DIRECT`` and ``prctl(PR_SET_PDEATHSIG)``; macOS has none of
them but has ``F_FULLFSYNC`` and ``F_NOCACHE``; Windows has fewer still. Callers ask for
the effect (flush, uncached writes, die with the parent, is it alive) and get the best
way this OS has, looked up at call time so a test can take a capability away.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable

# macOS's fcntl command numbers (<sys/fcntl.h>), for Pythons whose fcntl module lacks the names.
_DARWIN_F_FULLFSYNC = 51
_DARWIN_F_NOCACHE = 48


def flush_data(fd: int) -> None:
    """Push written data towards the disk while a download goes on (bounds the final sync's wait)."""
    sync = getattr(os, "fdatasync", None) or os.fsync
    sync(fd)


def make_durable(fd: int) -> None:
    """Make everything written to ``fd`` survive a power cut before it is called done.

    On macOS ``fsync`` only hands the data to the drive, whose cache may still lose it;
    ``F_FULLFSYNC`` asks the drive to flush. Where that is refused (some filesystems), fsync.
    """
    if sys.platform == "darwin":
        import fcntl

        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, getattr(fcntl, "F_FULLFSYNC", _DARWIN_F_FULLFSYNC))
            return
    os.fsync(fd)


def direct_io_flag() -> int:
    """``O_DIRECT`` where the OS has it (Linux), else 0."""
    return int(getattr(os, "O_DIRECT", 0))


def avoid_page_cache(fd: int) -> None:
    """Best effort, for files opened without ``O_DIRECT``: keep a large download from filling the
    page cache (macOS ``F_NOCACHE``). Elsewhere nothing is needed or possible."""
    if sys.platform != "darwin":
        return
    import fcntl

    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, getattr(fcntl, "F_NOCACHE", _DARWIN_F_NOCACHE), 1)


def parent_death_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that kills the child when the server dies, where the OS offers one.

    Only Linux has ``prctl(PR_SET_PDEATHSIG)``. Elsewhere there is none (None): engines stay
    in the server's process group, which ``kamiwaza server stop`` ends, and a restarted
    server finds and ends the ones a crash left (supervisor.py).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def die_with_parent() -> None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    return die_with_parent


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity where the OS has one, else all."""
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        with contextlib.suppress(OSError):
            return max(1, len(affinity(0)))
    return os.cpu_count() or 1


def physical_cores() -> int:
    """Cores, not hyper-threads (psutil knows on every OS), within the usable ones."""
    import psutil

    usable = usable_cores()
    return max(1, min(psutil.cpu_count(logical=False) or usable, usable))


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # exists, but we may not look at it
