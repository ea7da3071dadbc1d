"""Which files to read, and which images belong to one breast of one study.

Grouping uses only the DICOM headers (`read_identity`, no pixels), so a large batch is never
held in memory at once: the runner reads the pixels of one breast's views at a time. A file
whose header cannot be read is still passed on, alone in its group, so the data layer's full
reader names the exact problem (truncated, not DICOM, colour, ...).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ductai.data.dicom_reader import read_identity
from ductai.data.labels import UNKNOWN

__all__ = ["BreastGroup", "collect_files", "group_by_breast"]


@dataclass
class BreastGroup:
    """The files of one (StudyInstanceUID, laterality); `key` names its output folder."""

    study_instance_uid: str
    laterality: str
    files: list[Path] = field(default_factory=list)
    readable: bool = True  # False: the header could not be read (a group of one file)

    @property
    def key(self) -> str:
        side = self.laterality if self.laterality in ("L", "R") else "U"
        return f"study_{self.study_instance_uid or 'unknown'}_{side}"


def collect_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files named, and every file under folders named (recursive, hidden files skipped).

    A path that does not exist is kept, so it is reported as an error like any bad file.
    Duplicates (the same file reached twice) are read once.
    """
    found: list[Path] = []
    seen: set[Path] = set()
    for path in map(Path, paths):
        if path.is_dir():
            candidates = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        else:
            candidates = [path]
        for candidate in candidates:
            resolved = candidate.resolve()
            if resolved not in seen:
                seen.add(resolved)
                found.append(candidate)
    return found


def group_by_breast(files: Iterable[Path]) -> list[BreastGroup]:
    """Groups in first-seen order; files without a study UID or laterality share an 'unknown'."""
    groups: dict[tuple[str, str], BreastGroup] = {}
    unreadable: list[BreastGroup] = []
    for path in files:
        identity = read_identity(path) if path.is_file() else None
        if identity is None:
            unreadable.append(BreastGroup("", UNKNOWN, [path], readable=False))
            continue
        key = (identity["study_instance_uid"], identity["laterality"])
        group = groups.setdefault(key, BreastGroup(*key))
        group.files.append(path)
    return [*groups.values(), *unreadable]
