"""What the process does to itself at start, before it reads a secret or opens a socket."""

from __future__ import annotations

import ctypes
import resource
import sys

_PR_SET_DUMPABLE = 4  # <linux/prctl.h>


def keep_out_of_core_dumps() -> None:
    """Make the process non-dumpable: no core dump (which would hold the database password),
    and no ptrace or /proc/PID/mem by other processes of the same user. Linux only; elsewhere
    a no-op (the systemd unit's LimitCORE=0 covers core dumps there too)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, "prctl(PR_SET_DUMPABLE, 0) failed")


def raise_open_files_limit() -> None:
    """Raise the soft open-files limit to the hard one, as Go programs do at start: the
    configuration was checked against the hard limit (config.open_files_limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
