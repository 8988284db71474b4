"""Writing so that a reader never sees a half-written file or folder: write beside the target,
flush to disk, then rename over it (a rename within a file system is atomic). Every writer of the
package goes through here, and holds a lock on its output (:func:`output_lock`) so that two
writers of one output never meet."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

from .errors import DiskFullError, SpladeLuceneError
from .faults import fault_point

# the prefix of the builders' temporary folders (indexing/build.py), whose clean-up of stale ones then takes this too
_OLD = ".building-old-"


def mount_point(path: str | Path) -> Path:
    """The mount point of the file system that holds (or would hold) ``path``."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def naming_a_full_disk(what: str | Path):
    """Turn "no space left" inside the block into one :class:`DiskFullError` that names the file
    system and what was being written (an OSError from a write names neither)."""
    try:
        yield
    except OSError as exc:
        if is_disk_full(exc) and not isinstance(exc, DiskFullError):
            raise DiskFullError(exc.errno, f"no space left on {mount_point(what)} while writing {what}") from exc
        raise


class _Writes:
    """A file seen only through ``write``: numpy then writes in chunks through it, so a full disk is
    an OSError with its errno (``ndarray.tofile`` reports only a short write)."""

    def __init__(self, fh):
        self.write = fh.write


def save_array(path: str | Path, array) -> None:
    """``numpy.save``'s bytes at ``path``, written so that a full disk is reported as one."""
    import numpy as np

    with open(path, "wb") as fh:
        np.lib.format.write_array(_Writes(fh), np.asanyarray(array), allow_pickle=False)


def fsync_file(path: str | Path) -> None:
    """Flush one file's data to disk."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


@contextmanager
def atomic_file(path: str | Path, mode: str = "w", encoding: str | None = "utf-8"):
    """``with atomic_file(p) as fh: fh.write(...)``: the text lands in ``p.tmp-PID`` beside ``p``,
    is flushed and fsynced, then renamed over ``p``; on an error the temporary file is removed and
    ``p`` is left as it was."""
    path = check_output_path(path, "file")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with naming_a_full_disk(path):
        fh = open(tmp, mode, encoding=None if "b" in mode else encoding)
        try:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
            tmp.replace(path)
        except BaseException:
            try:
                fh.close()  # may fail again on a full disk: the file goes all the same
            except OSError:
                pass
            tmp.unlink(missing_ok=True)
            raise


def write_text(path: str | Path, text: str) -> None:
    """Replace ``path``'s content by ``text`` atomically."""
    with atomic_file(path) as fh:
        fh.write(text)


def publish_file(tmp: str | Path, target: str | Path) -> Path:
    """fsync the finished file ``tmp``, then rename it to ``target``."""
    fsync_file(tmp)
    return Path(tmp).replace(target)


@contextmanager
def folder_in_place(target: str | Path, fault: str):
    """A new folder beside ``target`` (``NAME.writing-PID``; any such folder a killed writer left is
    removed first) for the block to fill; when the block ends the fault point ``fault`` is passed and
    the folder takes ``target``'s place (:func:`move_into_place`); when it raises, it is removed."""
    target = Path(target)
    tmp = target.parent / f"{target.name}.writing-{os.getpid()}"
    for stale in target.parent.glob(f"{target.name}.writing-*"):  # ours, or left by a writer that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        fault_point(fault)
        move_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def move_into_place(tmp: str | Path, target: str | Path) -> None:
    """Replace the folder ``target`` (if any) by the finished folder ``tmp``, its files fsynced
    first. The old folder is renamed aside before the new one takes its name and is removed after,
    so ``target`` is always either the old or the new one, whole."""
    tmp, target = Path(tmp), Path(target)
    for folder, _, files in os.walk(tmp):
        for name in files:
            fsync_file(os.path.join(folder, name))
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f"{target.name}{_OLD}*"):  # left by a writer killed mid-swap
        shutil.rmtree(stale, ignore_errors=True)
    if target.exists():
        old = target.parent / f"{target.name}{_OLD}{os.getpid()}"
        target.rename(old)
        fault_point("publish.swap")
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        fault_point("publish.swap")
        tmp.rename(target)


class OutputLockedError(SpladeLuceneError):
    """Another process is writing the same output."""


class OutputPathError(SpladeLuceneError, OSError):
    """An output path that cannot be written as asked (a file in the way, a read-only file system)."""


def check_output_path(target: str | Path, kind: str = "folder") -> Path:
    """Refuse, before any work, an output ``target`` (a ``"folder"`` or a ``"file"``) that cannot be
    written: an existing one of the other kind, a file where a folder on its path should be, or a
    folder that cannot be written into (a read-only file system; permissions where they apply)."""
    target = Path(target)
    if target.exists() and target.is_dir() != (kind == "folder"):
        have = "a folder" if target.is_dir() else "a file"
        raise OutputPathError(f"{target} is {have}, and the output must be a {kind}: choose another path")
    parent = target.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputPathError(f"{parent} is a file, so {target} cannot be created inside it: choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        why = "is on a read-only file system" if _read_only(parent) else "cannot be written by this user"
        raise OutputPathError(f"{parent} {why}, so {target} cannot be written there: choose another path")
    return target


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


_HELD: dict[Path, int] = {}  # this process's locks, by lock file, with their nesting depth


def lock_path(target: str | Path) -> Path:
    """The lock file of an output: ``.NAME.lock`` beside it."""
    target = Path(target).absolute()
    return target.parent / f".{target.name}.lock"


@contextmanager
def output_lock(target: str | Path, kind: str = "folder"):
    """Hold the output ``target`` (a ``"folder"`` or a ``"file"``) for writing, once
    :func:`check_output_path` has found it writable: a lock file beside it records this process
    (pid, host, command). A second writer is refused at once, naming the first; a lock whose process
    is gone (same host, dead pid) is taken over with a warning. Nested use in one process is allowed."""
    path = lock_path(target)
    if path in _HELD:
        _HELD[path] += 1
        try:
            yield path
        finally:
            _HELD[path] -= 1
        return
    check_output_path(target, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:500],
          "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            owner = _read_owner(path)
            if owner is not None and not _stale(owner):
                raise OutputLockedError(
                    f"{target} is being written by pid {owner.get('pid')} on {owner.get('host')} since "
                    f"{owner.get('since')} ({owner.get('command')}); wait for it, or remove {path} if that "
                    "process is gone") from None
            warnings.warn(f"taking over the stale lock {path} (pid {owner.get('pid') if owner else '?'} "
                          f"on {owner.get('host') if owner else '?'} is gone)", stacklevel=3)
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        break
    else:
        raise OutputLockedError(f"{target}: could not take the lock {path}")
    _HELD[path] = 1
    try:
        yield path
    finally:
        del _HELD[path]
        if (_read_owner(path) or {}).get("pid") == me["pid"]:
            path.unlink(missing_ok=True)


def _read_owner(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # unreadable or half-written: treated as stale


def _stale(owner: dict) -> bool:
    """Whether the lock's process is gone: only decidable for this host."""
    if owner.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(owner.get("pid", -1)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, TypeError, OverflowError):
        return False
    return False
