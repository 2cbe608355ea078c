"""Part annotations: CUB's `parts/part_locs.txt` (also written by the generator) and the generated set's
discriminative parts per class (`synthetic.json`)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .synthetic import META

__all__ = ["read_parts", "discriminative_parts"]


def _id_lines(file: Path) -> list[list[str]]:
    """`<id> <rest of line>` pairs of a CUB index file (paths may hold spaces), blank lines skipped."""
    return [line.split(" ", 1) for line in file.read_text().splitlines() if line.strip()]


def read_parts(root) -> pd.DataFrame:
    """CUB's part annotations (`parts/part_locs.txt`, also written by `apikit.data.synthetic.make`) as a
    DataFrame: image_id, part_id, x, y, visible (bool), path (root/images/...), class_id.
    `df.attrs["parts"]` maps part ids to names (`parts/parts.txt`); `df.attrs["root"]` is `root`."""
    root = Path(root)
    file = root / "parts" / "part_locs.txt"
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist: {root} has no part annotations (only CUB and the "
                                "generated set have them).")
    locs = pd.read_csv(file, sep=r"\s+", header=None, names=["image_id", "part_id", "x", "y", "visible"])
    locs["visible"] = locs["visible"].astype(int).astype(bool)
    paths = {int(i): root / "images" / rel.strip() for i, rel in _id_lines(root / "images.txt")}
    classes = {int(i): int(c) for i, c in _id_lines(root / "image_class_labels.txt")}
    locs["path"] = locs["image_id"].map(paths)
    locs["class_id"] = locs["image_id"].map(classes)
    if locs["path"].isna().any():
        raise ValueError(f"{file} names images that are not in {root / 'images.txt'}")
    names = root / "parts" / "parts.txt"
    locs.attrs["parts"] = {int(i): n.strip() for i, n in _id_lines(names)} if names.is_file() else {}
    locs.attrs["root"] = root
    return locs


def discriminative_parts(root) -> dict[int, list[int]] | None:
    """{class_id: part ids that set the class apart within its group} from a generated set's
    `synthetic.json`; None for a set without one (CUB: the discriminative parts are not annotated)."""
    meta = Path(root) / META
    if not meta.is_file():
        return None
    return {int(c["class_id"]): [int(p) for p in c["discriminative_parts"]]
            for c in json.loads(meta.read_text())["classes"]}
