"""Trial checkpoints on shared storage: safe to load, durable, and an unreadable one restarts the trial."""

from __future__ import annotations

import pytest
import torch

from distillery.methods.data import load_dataset
from distillery.methods.distill.base import Progress, get_method
from distillery.orchestrator.store import TrialStore


class _Payload:
    """Not a tensor/container: torch.load(weights_only=True) must refuse to build it."""

    built = False

    def __reduce__(self):
        return (_mark_built, ())


def _mark_built():
    _Payload.built = True
    return "ran"


def _real_state() -> dict:
    """A resumable state as a trial saves it, from a real (tiny) DM run on digits."""
    states: list[dict] = []

    def keep(p: Progress) -> None:
        if p.phase == "distill" and p.state is not None:
            states.append(p.state())

    data = load_dataset("digits")
    method = get_method("dm")
    config = method.make_config("digits", 1, {"iterations": 3, "net_width": 8, "batch_real": 16})
    method.distill(data, 1, config, seed=0, device=torch.device("cpu"), progress_callback=keep)
    return {"phase": "distill", "iteration": 2, "state": states[-1], "losses": [[1, 0.5], [2, 0.25]]}


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    store = TrialStore(tmp_path, "s")
    state = _real_state()
    store.save_checkpoint("h", state)
    back = store.load_checkpoint("h")
    assert back["losses"] == state["losses"] and back["iteration"] == 2
    assert torch.equal(back["state"]["images"], state["state"]["images"])
    assert back["state"]["optimizer"]["param_groups"] == state["state"]["optimizer"]["param_groups"]
    assert not list((tmp_path / "s" / "trials" / "h").glob(".checkpoint-*"))  # no temp files left


def test_truncated_checkpoint_is_moved_aside_and_never_overwritten(tmp_path):
    store = TrialStore(tmp_path, "s")
    d = store.dir("h")
    for round_ in range(2):
        store.save_checkpoint("h", {"phase": "distill", "iteration": round_, "state": {"x": torch.ones(1000)}})
        path = d / "checkpoint.pt"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        with pytest.warns(UserWarning, match="could not be read"):
            assert store.load_checkpoint("h") is None
        assert not path.exists()
    assert len(list(d.glob("checkpoint.unreadable-*.pt"))) == 2  # the second did not replace the first
    assert store.load_checkpoint("h") is None  # nothing left to read: a clean restart


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    store = TrialStore(tmp_path, "s")
    store.dir("h").mkdir(parents=True)
    torch.save({"phase": "distill", "x": _Payload()}, store.dir("h") / "checkpoint.pt")
    with pytest.warns(UserWarning, match="could not be read"):
        assert store.load_checkpoint("h") is None
    assert not _Payload.built


def test_a_transient_read_error_is_retried_and_memory_errors_keep_the_checkpoint(tmp_path, monkeypatch):
    import errno

    import distillery.orchestrator.store as store_module

    store = TrialStore(tmp_path, "s")
    store.save_checkpoint("h", {"phase": "distill", "iteration": 3})
    real_load, calls = torch.load, []
    monkeypatch.setattr(store_module, "READ_BACKOFF_S", 0.0)

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) < 3:  # an NFS hiccup on the first two reads
            raise OSError(errno.EIO, "Input/output error")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(store_module.torch, "load", flaky)
    assert store.load_checkpoint("h")["iteration"] == 3 and len(calls) == 3
    assert (store.dir("h") / "checkpoint.pt").is_file()

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(store_module.torch, "load", no_memory)
    with pytest.raises(MemoryError):
        store.load_checkpoint("h")
    assert (store.dir("h") / "checkpoint.pt").is_file()  # the machine's trouble: the file is kept

    def dead(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(store_module.torch, "load", dead)
    with pytest.warns(UserWarning, match="could not be read after 3 attempts"):
        assert store.load_checkpoint("h") is None
    assert len(list(store.dir("h").glob("checkpoint.unreadable-*.pt"))) == 1


def test_every_file_for_a_later_reader_goes_through_the_atomic_helper():
    """No module writes such a file by hand (write_text / os.replace / mkstemp) any more."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "src" / "distillery"
    offenders = []
    for path in root.rglob("*.py"):
        if path.name == "atomic.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\.write_text\(|os\.replace\(|mkstemp\(", line) and "noqa: atomic" not in line:
                offenders.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
