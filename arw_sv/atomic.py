"""Atomic file output: write to a temporary file beside the target, then ``os.replace``.

A folder of several files (a SpeechBrain export) is written the same way as a whole: into a
temporary sibling folder, moved into place only once complete (:func:`atomic_folder`).

A crash or a full disk never leaves a half-written checkpoint, report or score file behind.
The temporary file's name carries the writer's pid (``.<name>.<pid>.<random>.tmp``), so
one a killed writer left behind is recognised (its pid is gone) and removed by the next
write to the same target. The result gets the usual mode for a new file under the umask
(``mkstemp`` alone would leave it ``0600``).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _remove_orphans(path: Path) -> None:
    """Delete temporaries of ``path`` whose writer process no longer exists."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)\.[^.]+\.tmp$")
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        match = pattern.match(candidate.name)
        if match and not _pid_alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                if candidate.is_dir() and not candidate.is_symlink():
                    shutil.rmtree(candidate)
                else:
                    candidate.unlink()
                log.info("removed %s, left by an interrupted write", candidate)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success move it over ``path``.

    Raises:
        IsADirectoryError: ``path`` is a folder (named; before anything is written).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(path)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
    )
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """``open`` for writing that only replaces ``path`` once the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


@contextlib.contextmanager
def atomic_folder(path: str | Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it becomes ``path`` as a whole.

    A kill or an error inside the block leaves ``path`` as it was (the temporary folder is
    removed, or by the next write if the process died). Over an existing folder the old one
    is moved aside, the new one moved in, the old one deleted: two renames apart, never a
    mix of old and new files.

    Args:
        path: the folder to write.
        force: replace a non-empty ``path``; refused otherwise, before anything is written.

    Raises:
        FileExistsError: ``path`` is a file, or a non-empty folder without ``force``.
    """
    path = Path(path)
    if path.is_symlink():
        if not path.is_dir():
            raise FileExistsError(f"{path}: a symbolic link, not to a folder")
        path = path.resolve()  # write the folder it points to; the link itself stays
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise FileExistsError(
            f"{path}: folder is not empty; choose another --out, or pass --force to replace it"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(path)
    tmp = Path(
        tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    )
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.is_dir() and any(path.iterdir()):
            old = path.parent / f".{path.name}.{os.getpid()}.old"
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if path.is_dir():
                path.rmdir()
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def no_follow_fd(path: str | Path, flags: int, mode: int = 0o666) -> int:
    """``os.open`` that never follows a symbolic link at ``path``: for every file a run
    keeps writing to (its log, its history) or locks, so that a link planted in a run
    folder cannot make training truncate, append to or print another file.

    Raises:
        ValueError: ``path`` is a symbolic link (named).
        OSError: any other failure to open it.
    """
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP or os.path.islink(path):
            raise ValueError(
                f"{path}: is a symbolic link; a run folder's files are never written through "
                "one (remove the link)"
            ) from None
        raise


def open_no_follow(path: str | Path, mode: str = "a") -> IO[str]:
    """:func:`no_follow_fd` as a text file: ``mode`` ``"a"`` (created if missing), ``"r"``
    or ``"w"`` (truncated).
    """
    flags = {"a": os.O_WRONLY | os.O_APPEND | os.O_CREAT, "r": os.O_RDONLY,
             "w": os.O_WRONLY | os.O_TRUNC | os.O_CREAT}[mode]  # fmt: skip
    return os.fdopen(no_follow_fd(path, flags), mode, encoding="utf-8")


def cache_dir() -> Path:
    """Where arw-sv keeps caches (ONNX exports, AS-norm cohort statistics):
    ``$ARW_SV_CACHE``, else ``$XDG_CACHE_HOME/arw_sv``, else ``~/.cache/arw_sv``.
    """
    if os.environ.get("ARW_SV_CACHE"):
        return Path(os.environ["ARW_SV_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "arw_sv"
