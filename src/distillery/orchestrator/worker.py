"""What every Ray trial does before its own work, for sweep and tuning trials alike.

A worker process is handed a resolved spec and its resources by the driver and never re-resolves
them (locations were made absolute there). Here it only claims what the resources grant: torch's
thread count (fractional CPUs still get one thread), the device (a trial granted no GPU runs on
the CPU even when the config says ``auto``, so it never lands on a GPU another trial holds), and
torch's share of a shared GPU; then it loads the trial's data once.
"""

from __future__ import annotations

import torch

from distillery.methods.data import ImageData, load_dataset
from distillery.methods.trial import TrialSpec, prepare_data
from distillery.methods.utils.device import resolve_device

from .config import Resources


def trial_device(resources: Resources, device: str) -> torch.device:
    """The device a trial granted ``resources`` runs on (``device``: the config's choice); the
    estimate calibrates each trial shape on the same one."""
    return resolve_device(device if resources.gpu > 0 or device == "cpu" else "cpu")


def claim_resources(resources: Resources, device: str) -> torch.device:
    """Threads and device for a trial granted ``resources`` (``device``: the config's choice)."""
    torch.set_num_threads(max(1, int(resources.cpu)))
    dev = trial_device(resources, device)
    if dev.type == "cuda" and resources.gpu_memory_fraction:
        torch.cuda.set_per_process_memory_fraction(resources.gpu_memory_fraction, dev)
    return dev


def trial_data(spec: TrialSpec) -> ImageData:
    """The trial's data, loaded (through the decoded-tensor cache) and transformed as its method needs."""
    return prepare_data(spec, load_dataset(spec.dataset, spec.data))
