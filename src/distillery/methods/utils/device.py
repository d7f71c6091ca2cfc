"""Device resolution: 'auto' picks CUDA when present, so the same command runs on a laptop and a GPU box."""

from __future__ import annotations

import os

import torch

from ..errors import UserError


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} was asked for but CUDA is not available here; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None


def free_memory_bytes(device: torch.device) -> int | None:
    """Memory a run on ``device`` can still take, or None when this platform does not say: on CUDA
    the driver's free memory plus what torch holds cached but unused; on CPU the kernel's
    MemAvailable (Linux), else the free physical pages (sysconf). Used to pick a memory mode that
    fits (MTT's ``memory_mode: auto``), never to refuse a run."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None
