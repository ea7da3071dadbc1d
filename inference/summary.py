"""The short text table `ductai infer` and `ductai demo` print: what was found, and where."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ductai.inference.run import InferenceRun

__all__ = ["format_run"]

_HEADER = ("image", "side", "view", "#", "class", "score", "to nipple", "clock", "notes")


def _mm(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1f} mm"


def _rows(run: InferenceRun) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for view in run.views:
        report = view.report
        name = Path(view.path).stem
        flags = ", ".join(report.get("flags", []))
        lesions = report.get("lesions", [])
        if not lesions:
            rows.append((name, view.laterality, view.view, "-", "no lesion", "", "", "", flags))
        for lesion in lesions:
            rows.append(
                (
                    name,
                    view.laterality,
                    view.view,
                    str(lesion["id"]),
                    lesion["label"],
                    f"{lesion['score']:.2f}",
                    _mm(lesion.get("distance_to_nipple_mm")),
                    lesion.get("clock") or "?",
                    flags,
                )
            )
            flags = ""  # once per view is enough
    return rows


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [_HEADER, *rows]) for i in range(len(_HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [_HEADER, *rows]]
    return "\n".join(lines)


def _view_files(run: InferenceRun) -> list[str]:
    """Output files of the views, in report order (DICOM ones only when they were written)."""
    names: dict[str, None] = {}
    for view in run.views:
        for name in (view.report.get("outputs") or {}).values():
            if "/" not in name:  # the link to the study report is not a file of the view
                names[name] = None
    return list(names)


def format_run(run: InferenceRun) -> str:
    out = run.out_dir
    n_views = len(run.views)
    lines = [
        f"Analysed {n_views} view(s) of {len(run.breasts)} breast(s) in {run.seconds:.1f} s "
        f"with {run.model}.",
    ]
    if n_views:
        lines += ["", _table(_rows(run)), ""]
        lines.append("'?' clock: the lesion was not matched in both views of its breast.")
        files = ["report.json", *_view_files(run)]
        lines.append(f"Per view   : {out}/<SOPInstanceUID>/ ({', '.join(files)})")
        maps = [b.folder for b in run.breasts if b.folder is not None]
        if maps:
            lines.append(
                f"Per breast : {out}/study_<StudyUID>_<L|R>/ (study_report.json, "
                f"surgical_map.png), {len(maps)} folder(s)"
            )
    if run.errors:
        lines.append(
            f"Errors     : {len(run.errors)}, each naming its file (also in {out / 'errors.json'})"
        )
        lines += [f"  {e.error}" for e in run.errors]
    return "\n".join(lines)
