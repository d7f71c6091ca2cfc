"""Checks of a resolved config against the files it names, before anything starts.

The schema (config.py) catches what a config says; this catches what it refers to: a data root
that is absent, or an IPC larger than the smallest class of its dataset (which would make every
class-wise draw repeat images). Both used to surface inside every trial, minutes later and once
per trial. Class sizes come from ``methods.data.train_class_counts``, which reads file names or a
label file and never decodes images, so the check costs a directory scan.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from distillery.methods.data import DATASETS, MissingDataError, train_class_counts
from distillery.methods.errors import UserError

from .config import DatasetEntry

Fail = Callable[[str, str], None]


def check_datasets_present(entries: Sequence[DatasetEntry], max_ipc: int | None, fail: Fail,
                           validation_per_class: int | None = None, command: str = "sweep") -> None:
    """Every dataset's files are where the config says (or will be downloaded), and ``max_ipc``
    fits its smallest class once subsets and a validation split are taken out."""
    from .grid import dataset_options  # grid imports config: keep this module importable from there

    for i, entry in enumerate(entries):
        options = dataset_options(entry)
        try:
            counts = train_class_counts(entry.name, options)
        except MissingDataError as err:
            source = DATASETS.get(entry.format or entry.name)
            if entry.download and source.can_download:
                continue  # the trial downloads it
            fixes = f"set datasets[{i}].root in the config (or `distillery {command} ... --set datasets.{i}.root=PATH`) to a folder laid out as {source.layout}"
            if source.can_download:
                fixes += f", or set datasets[{i}].download: true (needs internet)"
            fail(f"datasets[{i}].root", f"dataset {entry.name!r}: {err.path} is missing ({err.expected}); the root is {options.root}. Fix: {fixes}")
            continue
        except UserError as err:
            fail(f"datasets[{i}]", str(err))
            continue
        if counts is None or max_ipc is None:
            continue  # not countable without decoding: the trial checks it (methods.trial.check_ipc)
        smallest = min(counts)
        where = f"{smallest} training images"
        if validation_per_class is not None:
            if validation_per_class >= smallest:
                fail("validation_per_class", f"{validation_per_class} would leave no training images in the smallest class of "
                     f"{entry.name!r} ({smallest}); use a value below {smallest}")
            smallest -= validation_per_class
            where = f"{smallest} training images after the validation split"
        if entry.subset_per_class is not None and entry.subset_per_class < smallest:
            smallest = entry.subset_per_class
            where = f"subset_per_class {smallest}"
        if max_ipc > smallest:
            fail("ipcs", f"IPC {max_ipc} is more than dataset {entry.name!r} has in its smallest class ({where}); "
                 f"use IPCs <= {smallest}" + (" or a larger datasets[%d].subset_per_class" % i if entry.subset_per_class else ""))


def check_writable(path: str, field: str, fail: Fail) -> None:
    """``path`` (a folder the run will create if needed) can be written: its nearest existing
    ancestor is a folder that takes a temporary file (written and removed, so a dry run leaves no
    trace). Checked before Ray and MLflow start, so a run never dies inside Tune leaving a parent run
    behind that would then force --resume."""
    from pathlib import Path

    p = Path(path)
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        fail(field, f"{path} cannot be a folder: {probe} is a file; choose another path")
        return
    import tempfile

    try:  # a real write (then removed): permissions, read-only mounts and quotas all show here, even for root
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        fail(field, f"{path} cannot be written ({probe}: {exc.strerror or exc}); choose a folder you can write, "
             f"e.g. --set {field}=$HOME/distillery-runs")


def check_config_files(config: Any, source: str, validation_per_class: int | None = None, command: str = "sweep") -> None:
    """``check_datasets_present`` for a resolved sweep or tuning config (both have ``datasets``,
    ``ipcs`` and ``methods`` whose entries may replace ``ipcs``), raising UserError naming ``source``."""

    def fail(field: str, msg: str) -> None:
        raise UserError(f"{source}: {field}: {msg}")

    check_writable(config.storage_path, "storage_path", fail)
    ipcs = [ipc for entry in config.methods.values() for ipc in (entry.ipcs or config.ipcs)]  # `full` is never a method here
    check_datasets_present(config.datasets, max(ipcs), fail, validation_per_class=validation_per_class, command=command)
