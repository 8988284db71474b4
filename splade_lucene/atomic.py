"""Writing so that a reader never sees a half-written file or folder: write beside the target,
flush to disk, then rename over it (a rename within a file system is atomic). Every writer of the
package goes through here."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

# the prefix of the builders' temporary folders (index.py), whose clean-up of stale ones then takes this too
_OLD = ".building-old-"


def fsync_file(path: str | Path) -> None:
    """Flush one file's data to disk."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


@contextmanager
def atomic_file(path: str | Path, mode: str = "w", encoding: str | None = "utf-8"):
    """``with atomic_file(p) as fh: fh.write(...)``: the text lands in ``p.tmp-PID`` beside ``p``,
    is flushed and fsynced, then renamed over ``p``; on an error the temporary file is removed and
    ``p`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    fh = open(tmp, mode, encoding=None if "b" in mode else encoding)
    try:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        tmp.replace(path)
    except BaseException:
        fh.close()
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


def move_into_place(tmp: str | Path, target: str | Path) -> None:
    """Replace the folder ``target`` (if any) by the finished folder ``tmp``, its files fsynced
    first. The old folder is renamed aside before the new one takes its name and is removed after,
    so ``target`` is always either the old or the new one, whole."""
    tmp, target = Path(tmp), Path(target)
    for folder, _, files in os.walk(tmp):
        for name in files:
            fsync_file(os.path.join(folder, name))
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        old = target.parent / f"{target.name}{_OLD}{os.getpid()}"
        target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(target)
