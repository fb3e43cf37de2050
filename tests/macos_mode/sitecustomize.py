"""Takes the Linux-only APIs away from every Python process started with this folder on PYTHONPATH.

macOS's Python has no ``os.fdatasync``, ``os.O_DIRECT``, ``os.sched_getaffinity`` or
``posix_fadvise``, and its libc has no ``prctl``. tests/test_portable.py runs the whole
pull -> serve -> chat -> stop path with them gone, in the server and the CLI alike, so a
Linux-only call on that path fails here as it would on a Mac.
"""

import ctypes
import os

for _name in ("fdatasync", "O_DIRECT", "sched_getaffinity", "sched_setaffinity", "posix_fadvise", "O_NOATIME"):
    if hasattr(os, _name):
        delattr(os, _name)


class _LibcWithoutPrctl(ctypes.CDLL):
    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        if name == "prctl":
            raise AttributeError(name)
        return super().__getattr__(name)


ctypes.CDLL = _LibcWithoutPrctl  # type: ignore[misc]
