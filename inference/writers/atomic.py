"""Safe folder names and all-or-nothing output folders.

A view's outputs are written into a hidden temporary folder next to the final one and renamed
into place only when every file is complete, so a crash (or a kill) never leaves a folder that
looks like a finished result: readers and PACS forwarders look only at final names.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ductai.data.atomic import fsync_path

__all__ = ["atomic_folder", "safe_name", "safe_uid"]

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _digest(value: str) -> str:
    return "h" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def safe_uid(uid: str) -> str:
    """`uid` itself when it is a well-formed DICOM UID (digits and dots, <= 64), else a hash.

    The UID comes from the file being read, so a crafted one (``../../etc``, ``/abs``, NUL,
    a 10 kB string) must never become a path: anything else maps to a stable hex digest.
    """
    uid = str(uid)
    if _UID.match(uid) and len(uid) <= 64:
        return uid
    return _digest(uid)


def safe_name(name: str) -> str:
    """A single path component made of [A-Za-z0-9._-] (no leading dot), else a hash."""
    name = str(name)
    if _NAME.match(name) and len(name) <= 128 and ".." not in name:
        return name
    return _digest(name)


@contextmanager
def atomic_folder(final: str | Path, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary folder; on success it becomes `final` (replacing an old one).

    On an exception the temporary folder is removed and `final` is left as it was. The
    temporary folder is a sibling so the rename stays on one file system (atomic on POSIX).
    """
    final = Path(final)
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=parent))
    try:
        yield tmp
        _fsync_tree(tmp)
        if final.exists():
            if not replace:
                raise FileExistsError(f"{final} exists")
            # Move the old result aside first: a rename cannot replace a non-empty folder.
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=parent))
            os.replace(final, old / "previous")
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_path(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_tree(folder: Path) -> None:
    """Flush file contents before the rename publishes them (a power cut after the rename)."""
    for path in folder.rglob("*"):
        if path.is_file():
            fsync_path(path)
