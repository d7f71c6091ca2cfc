"""Peak resident memory of this process, for the benchmarks (Linux /proc)."""

from __future__ import annotations

import ctypes


def status_kb(field: str) -> int:
    """A /proc/self/status field in kB (VmRSS, VmHWM, ...), -1 if absent."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def reset_peak() -> bool:
    """Hand freed heap pages back, then reset VmHWM to the current RSS; False if the kernel refuses."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (Linux >= 4.0)
        return True
    except OSError:
        return False
