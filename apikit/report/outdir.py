"""The report's folder: `render` writes README.md, report.html and figures/*.png only where no one else's files
are in the way, records what it wrote, and removes the figures its previous report drew that this one does not.

A folder takes the report when it is new or empty, or when what stands where the report writes (README.md,
report.html, figures/ by the report's figure names) was written by an apikit report: listed in its
`.apikit-report.json`. Anything else in the way (a README.md of your own) and the project's own
folders are refused before any work, naming what is in the way; other files are left as they are.
"""
import hashlib
import os
import re
from pathlib import Path

from ..notebook_errors import OneLineError
from ..runs import CorruptRunFile, project_folder, read_json, write_json

__all__ = ["WRITTEN", "TOP", "FIGURES", "LEGEND", "DIAGNOSTICS", "NotAReportFolder", "figure_stem", "check_out_dir",
           "record"]

WRITTEN = ".apikit-report.json"  # what the last report in this folder wrote, relative to it
TOP = ("README.md", "report.html")
FIGURES = "figures"
# The start of the legend's sentence in every apikit report's README.md.
LEGEND = "Every figure comes from the `metrics.json` of a run_dir under"
# The names the report gives its figures (`figure_stem` + ".png" or "-curves.png", and the diagnostics): another
# file by such a name is in the way.
DIAGNOSTICS = "diagnostics.png"
_DRAWN = re.compile(r"[a-z0-9_]+-(paper|[0-9a-f]{8})(-curves)?\.png|" + re.escape(DIAGNOSTICS))


def figure_stem(prefix, setting, paper):
    """A block's figure name without suffix: 'table1-paper' in the paper's setting, else 'table1-<8 hex of the
    setting's label>' (stable across renders of the same setting)."""
    return f"{prefix}-paper" if paper else f"{prefix}-{hashlib.sha1(setting.encode()).hexdigest()[:8]}"


class NotAReportFolder(OneLineError, ValueError):
    """An out_dir where writing the report would overwrite files it did not write."""


def _listed(out):
    """The relative files `.apikit-report.json` lists (none when it is missing or not what apikit writes)."""
    try:
        files = read_json(out / WRITTEN, max_bytes=1 << 20, max_depth=3, hint="").get("files")
    except (CorruptRunFile, AttributeError):
        return set()
    if not isinstance(files, list):
        return set()
    return {f for f in files if (isinstance(f, str) and f in TOP) or _is_figure(f)}


def _is_figure(name):
    return isinstance(name, str) and name.startswith(FIGURES + "/") and name.count("/") == 1 and name.endswith(".png")


def check_out_dir(out, given=None, name="out_dir"):
    """The files an earlier report wrote into the folder `out` (a set of relative paths), after checking that the
    report may be written there; NotAReportFolder naming what is in the way otherwise. `given`: `out` as the user
    wrote it, for the message."""
    given = str(out if given is None else given)
    fix = f"choose another {name} (a new folder, e.g. reports/mine), or move them out of it"
    why = project_folder(out, allow=("reports",))
    if why:
        raise NotAReportFolder(f"{name}={given!r} is {out.resolve()}, {why}, not a report folder: the report writes "
                               f"README.md, report.html and figures/ into it; choose another {name} (a new folder, "
                               "e.g. reports/mine).")
    if not out.is_dir():
        return set()
    mine = _listed(out)
    in_way = [n for n in TOP if os.path.lexists(out / n) and n not in mine]
    if os.path.lexists(out / FIGURES):
        if not (out / FIGURES).is_dir():
            in_way.append(FIGURES)
        else:
            in_way += sorted(f"{FIGURES}/{n}" for n in os.listdir(out / FIGURES)
                             if _DRAWN.fullmatch(n) and f"{FIGURES}/{n}" not in mine)
    if in_way:
        shown = ", ".join(in_way[:5]) + (f" and {len(in_way) - 5} more" if len(in_way) > 5 else "")
        raise NotAReportFolder(f"{name}={given!r} ({out}) holds {shown}, which no apikit report wrote: the report "
                               f"would overwrite or mix with them; {fix}.")
    return mine


def record(out, before, written):
    """List `written` (paths in `out`) in `.apikit-report.json`, then remove the figures of `before` (what the
    earlier report wrote) that this report did not draw again; returns the relative paths listed."""
    now = {Path(p).relative_to(out).as_posix() for p in written}
    write_json(out / WRITTEN, {"files": sorted(now)})
    for stale in sorted(before - now):
        if _is_figure(stale):
            (out / stale).unlink(missing_ok=True)
    return sorted(now)
