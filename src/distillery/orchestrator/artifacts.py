"""The files a finished trial leaves behind (see docs/tracking-schema.md)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch
import yaml

from distillery.methods.data.base import ImageData
from distillery.methods.distill.base import SyntheticSet
from distillery.methods.trial import TrialResult


def write_trial_artifacts(out: Path, result: TrialResult, data: ImageData, record: dict[str, Any]) -> None:
    if not result.synset.full_data:
        result.synset.save(str(out / "synthetic_set.pt"))
        save_grid(result.synset, data, out / "synthetic_grid.png")
    with open(out / "per_class.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "model", "class_index", "class_name", "acc"])
        for arch, ev in result.evals.items():
            for k in range(ev.n_models):
                for c, name in enumerate(result.class_names):
                    w.writerow([arch, k, c, name, f"{float(ev.per_class[k, c]):.6f}"])
    # a staging folder: the store fsyncs it whole and publishes it by one rename (store.publish)
    (out / "config.yaml").write_text(yaml.safe_dump(record["config"], sort_keys=False))  # noqa: atomic
    (out / "result.json").write_text(json.dumps(record, default=float))  # noqa: atomic


def save_grid(synset: SyntheticSet, data: ImageData, path: Path, max_per_class: int = 10) -> None:
    """A class-per-row grid of the synthetic images in pixel space (per-image min-max when the
    data were transformed, e.g. ZCA, where mean/std no longer invert the preprocessing)."""
    from torchvision.utils import save_image

    labels = synset.hard_labels().cpu()
    rows = []
    for c in range(data.num_classes):
        rows.append(synset.images.detach().cpu()[labels == c][:max_per_class])
    per_row = max((len(r) for r in rows), default=1)
    images = torch.cat(rows) if rows else synset.images.cpu()
    if data.transform:
        flat = images.flatten(1)
        lo, hi = flat.min(1, keepdim=True)[0], flat.max(1, keepdim=True)[0]
        images = ((flat - lo) / (hi - lo).clamp(min=1e-8)).view_as(images)
    else:
        images = data.denormalize(images)
    # pad short rows so each class is one row
    padded = []
    for r in rows:
        n = len(r)
        block = images[:n]
        images = images[n:]
        if n < per_row:
            block = torch.cat([block, torch.ones(per_row - n, *block.shape[1:])])
        padded.append(block)
    save_image(torch.cat(padded), str(path), nrow=per_row, padding=1, pad_value=1.0)
