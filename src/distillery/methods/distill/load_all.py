"""Import every built-in method module so it registers itself (add new methods here)."""

from importlib import import_module

_MODULES = ("baselines", "dc", "dm", "datadam", "cafe", "idc", "idm", "kfs", "mtt", "mtt.trajectory", "mtt.haba", "meta.bptt", "kernel.kip", "kernel.frepo", "kernel.rfad")

for _name in _MODULES:
    try:
        import_module(f"{__package__}.{_name}")
    except ModuleNotFoundError as exc:  # a method module not written yet
        if exc.name != f"{__package__}.{_name}":
            raise
