"""An exclusive lock on a run folder, so two trainings never write into the same one.

The lock is ``fcntl.flock`` on ``<out_dir>/.lock``, which the kernel releases when the
process ends however it ends; the file holds the owner's pid and host while it runs and is
emptied on a clean exit. A pid left in it therefore means the last run did not exit
cleanly (killed, or crashed hard): the new run takes the lock and says so.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
from pathlib import Path

from arw_sv.atomic import no_follow_fd

log = logging.getLogger(__name__)


class RunLockedError(FileExistsError):
    """Another live process holds the run folder's lock."""


class RunLock:
    """Hold ``<folder>/.lock`` exclusively until :meth:`release` (or the process ends).

    Raises:
        RunLockedError: another process holds it (its pid and host named).
    """

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / ".lock"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = no_follow_fd(self.path, os.O_RDWR | os.O_CREAT)  # never a link's target
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(self._fd, 256, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            raise RunLockedError(
                f"{self.path.parent} is in use by another arw-sv train ({owner}); wait for it "
                "to finish or choose another train.out_dir"
            ) from None
        stale = os.pread(self._fd, 256, 0).decode(errors="replace").strip()
        self.stale_owner = stale or None
        if stale:
            log.warning(
                "%s: the previous run (%s) did not exit cleanly; its stale lock is taken over",
                self.path.parent,
                stale,
            )
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        os.fsync(self._fd)

    def release(self) -> None:
        """Empty the lock file (a clean exit) and unlock it."""
        if self._fd < 0:
            return
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = -1
