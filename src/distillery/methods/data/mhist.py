"""MHIST (Wei et al. 2021, "A Petri Dish for Histopathology Image Analysis") in its public layout.

The release is a folder with ``annotations.csv`` (columns ``Image Name``, ``Majority Vote Label``
with values HP / SSA, ``Number of Annotators who Selected SSA (Out of 7)``, ``Partition`` with
values train / test) and ``images/`` holding the 3,152 224x224 RGB patches it names; the
``Partition`` column is the train/test split. It is a binary task: hyperplastic polyp (benign)
against sessile serrated adenoma (precancerous). It needs a data-use agreement, so there is no
download: ``root`` must point at the unpacked folder. Images keep their native 224x224 (the
report in the study's seeds trains ConvNets on that size); ``resize: 64`` is a laptop-sized choice.

Class order is HP = 0, SSA = 1 (the order of the label column's values in the paper and in public
loaders), with the full names as class names so reports read as pathology, not abbreviations.
The CSV, not the folder, defines the dataset: files in ``images/`` that the CSV does not name are
ignored, and a named file that is missing is an error naming it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from ..errors import UserError
from .imagefolder import _decode_all, _stack
from .source import DATASETS, DatasetSource, MissingDataError, RawSplits

#: label code in the CSV -> class name (index = position)
CLASSES: dict[str, str] = {"HP": "hyperplastic polyp (HP)", "SSA": "sessile serrated adenoma (SSA)"}
PARTITIONS = ("train", "test")
COLUMNS = ("Image Name", "Majority Vote Label", "Partition")
LAYOUT = "<root>/annotations.csv (Image Name, Majority Vote Label, Partition) and <root>/images/<Image Name>"


def read_annotations(path: Path) -> list[tuple[str, int, str]]:
    """(image name, class index, partition) per row of the CSV, checked; UserError naming the file,
    the row and the fix on anything unexpected."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise UserError(
                    f"dataset 'mhist': {path} has no column(s) {', '.join(repr(c) for c in missing)} (its header: "
                    f"{', '.join(header) or 'empty'}); use the annotations.csv of the MHIST release"
                )
            rows = []
            for line, row in enumerate(reader, start=2):
                if None in row:  # csv.DictReader files fields beyond the header under None
                    raise UserError(f"dataset 'mhist': {path} line {line}: more fields than the header's {len(header)}; "
                                    "fix the row (a stray comma?)")
                row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
                label, part = row["Majority Vote Label"].upper(), row["Partition"].lower()
                if label not in CLASSES:
                    raise UserError(f"dataset 'mhist': {path} line {line}: label {row['Majority Vote Label']!r} is not one of "
                                    f"{', '.join(CLASSES)}; fix or remove the row")
                if part not in PARTITIONS:
                    raise UserError(f"dataset 'mhist': {path} line {line}: partition {row['Partition']!r} is not train or test; "
                                    "fix or remove the row")
                if not row["Image Name"]:
                    raise UserError(f"dataset 'mhist': {path} line {line}: empty Image Name; fix or remove the row")
                rows.append((row["Image Name"], list(CLASSES).index(label), part))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"dataset 'mhist': cannot read {path} ({err}); replace it with the release's annotations.csv") from None
    if not any(p == "train" for _, _, p in rows):
        raise UserError(f"dataset 'mhist': {path} names no training image (Partition = train)")
    return rows


@DATASETS.register("mhist")
class MHIST(DatasetSource):
    layout = LAYOUT

    def _annotations(self, root: Path) -> Path:
        csv_path = root / "annotations.csv"
        if not csv_path.is_file():
            raise MissingDataError(csv_path, f"MHIST's annotation file; mhist expects {LAYOUT}")
        if not (root / "images").is_dir():
            raise MissingDataError(root / "images", f"the folder of MHIST's image patches; mhist expects {LAYOUT}")
        return csv_path

    def locate(self, root: Path | None) -> list[str]:
        """The CSV first, then every image it names (train rows, then test rows, in CSV order)."""
        assert root is not None
        csv_path = self._annotations(root)
        rows = read_annotations(csv_path)
        files = [str(csv_path)]
        for part in PARTITIONS:
            for name, _, p in rows:
                if p == part:
                    image = root / "images" / name
                    if not image.is_file():
                        raise MissingDataError(image, f"an image named in {csv_path.name}; restore it or remove its row")
                    files.append(str(image))
        return files

    def train_class_counts(self, root: Path | None, files: list[str]) -> list[int] | None:
        rows = read_annotations(Path(files[0]))
        return [sum(1 for _, c, p in rows if p == "train" and c == k) for k in range(len(CLASSES))]

    def decode(self, root: Path | None, files: list[str], resize: int | None) -> RawSplits:
        rows = read_annotations(Path(files[0]))
        ordered = [(c, p) for part in PARTITIONS for _, c, p in rows if p == part]  # the order locate lists images in
        arrays = _decode_all(files[1:], resize)
        x = _stack(arrays, files[1:], gray=False)
        del arrays
        y = torch.tensor([c for c, _ in ordered], dtype=torch.int64)
        is_train = torch.tensor([p == "train" for _, p in ordered])
        return RawSplits(x[is_train], y[is_train], x[~is_train], y[~is_train], tuple(CLASSES.values()))
