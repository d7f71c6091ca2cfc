"""Expert trajectories for MTT: training one expert, and the on-disk buffer that shares them.

An expert is a network trained on the real training set with plain SGD (lr 0.01, batch 256, no
momentum, no weight decay, DSA on, as the reference buffer.py) whose flat parameter vector is saved
at initialisation and after every epoch: a float32 ``[epochs + 1, num_params]`` array, one ``.npy``
file per expert. Expert ``i`` is a pure function of (data, ExpertSpec, i): its initial weights,
batch order and augmentation draws all derive from ``(spec.seed, i, epoch)``.

Experts are trained only as far as a trial reads (``spec.epochs`` = the last epoch any requested
trial's window reaches), not the reference's fixed 50 epochs, and extended on demand: plain SGD has
no optimizer state and every epoch's draws are seeded by the epoch, so training epochs E+1.. from
the stored row E gives the same bits as an uninterrupted build (tested). The number of epochs is
therefore not part of the key: a buffer with more epochs serves every trial that needs fewer.
Rows stay float32: the matching target is the *difference* of two rows a few epochs apart,
which is ~1e-2 of the weights' magnitude, so float16 (3 significant digits) would put ~10% noise
on it. One row per epoch in a C-order array means a trial's two reads touch two contiguous rows.

On disk (``<buffer_dir>/<dataset>-<arch>-<key>/``):

* ``buffer.json``: the spec, the data description and the parameter layout (written once);
* ``expert_0007.npy`` + ``expert_0007.json``: a finished expert (trained ``epochs`` epochs, the
  marker says how many). The array is written under a temporary name and ``os.replace``d into
  place; the ``.json`` marker is written (atomically) after it. An expert counts as done for a
  request of E epochs only with a marker that matches the key and index, has >= E epochs and the
  file's size, so a half-written file, a leftover temporary or a file without marker is rebuilt,
  never used. Extending it copies its rows into a new partial file and trains on from there; the
  finished file keeps serving shorter requests until the longer one replaces it;
* ``expert_0007.partial.npy`` + ``.partial.json``: an expert being trained (rows written as
  epochs finish, the json records how many are valid). A job that dies resumes from it; because
  plain SGD has no optimizer state and the draws are per epoch, the result equals an
  uninterrupted build;
* ``expert_0007.lock``: held (flock) while building, so two workers never build the same expert.

The key hashes what determines the trajectories: the data (dataset fingerprint, or a content hash
for hand-made data) with its transforms (ZCA), the arch and its options, lr, batch size, DSA
strategy and expert seed, and FORMAT_VERSION. It excludes the number of experts and of epochs:
expert i is the same whatever the count and its first E epochs do not depend on how many follow,
so asking for more experts or epochs extends a buffer. (FORMAT_VERSION 2 dropped epochs from the
key; buffers of version 1 are not read and get rebuilt.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...aug import DiffAug
from ...data.base import ImageData
from ...errors import UserError
from ...nets import build_network
from ...utils.atomic import atomic_write
from ...utils.seeding import derive_seed, generator
from .gsam import gsam_direction
from .selection import Curriculum

try:  # POSIX; elsewhere concurrent builders of one expert would race (each result is still valid)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: ``on_epoch(epochs_done, target_epochs)`` for one expert's build
EpochCallback = Callable[[int, int], None]
#: ``progress(epochs_done, epochs_total)`` over every expert a call builds
BuildProgress = Callable[[int, int], None]

FORMAT_VERSION = 2
OPTIMIZERS = ("sgd", "gsam")
#: spec fields added after FORMAT_VERSION 2 that enter the key only when they differ from their
#: default, so MTT's existing buffers keep their keys
_LATER_FIELDS = {"optimizer": "sgd", "rho": 0.0, "gsam_alpha": 0.0, "adaptive": True, "selection": ""}


@dataclass(frozen=True)
class ExpertSpec:
    """Everything besides the data that determines an expert trajectory."""

    arch: str = "convnet"
    net_options: tuple[tuple[str, Any], ...] = ()  # sorted (name, value) pairs
    epochs: int = 50
    lr: float = 0.01
    batch_size: int = 256
    dsa_strategy: str = "none"  # resolved strategy string ("none" = no augmentation)
    seed: int = 0
    # FTD/DATM/PAD experts: GSAM on top of the plain SGD step (gsam.py); "sgd" is MTT's
    optimizer: str = "sgd"  # sgd | gsam
    rho: float = 0.0
    gsam_alpha: float = 0.0
    adaptive: bool = True
    #: PAD's data selection: an identifier of the ranking and schedule (selection.py), "" for all data;
    #: the buffer that trains such experts is given the Curriculum itself
    selection: str = ""

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"expert optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")

    def net_kwargs(self) -> dict[str, Any]:
        return dict(self.net_options)


def default_buffer_dir() -> Path:
    return Path(os.environ.get("DISTILLERY_CACHE") or "~/.cache/distillery").expanduser().resolve() / "experts"


def resolve_buffer_dir(buffer_dir: str | os.PathLike | None) -> str:
    """Absolute buffer root (default ``$DISTILLERY_CACHE/experts`` or ``~/.cache/distillery/experts``)."""
    return str(Path(buffer_dir).expanduser().resolve()) if buffer_dir else str(default_buffer_dir())


def content_id(data: ImageData) -> str:
    """Hash of the training tensors themselves, for data without a dataset fingerprint."""
    h = hashlib.blake2b(digest_size=12)
    h.update(repr((data.classes, data.transform)).encode())
    for t in (data.train_x, data.train_y):
        arr = t.detach().cpu().contiguous().numpy()
        h.update(f"{arr.dtype}{arr.shape}".encode())
        h.update(memoryview(arr).cast("B"))
    return "content-" + h.hexdigest()


def data_id(data: ImageData) -> str:
    """What identifies the untransformed data: its dataset fingerprint when known."""
    return data.fingerprint if data.fingerprint else content_id(data)


def buffer_key(data_ident: str, transforms: tuple[str, ...], spec: ExpertSpec) -> str:
    ident = {"format": FORMAT_VERSION, "data": data_ident, "transforms": list(transforms), "spec": _keyed_spec(spec)}
    return hashlib.blake2b(json.dumps(ident, sort_keys=True, default=str).encode(), digest_size=10).hexdigest()


def _keyed_spec(spec: ExpertSpec) -> dict[str, Any]:
    """The spec without ``epochs`` (how far experts are trained is not what they are) and without
    later fields at their defaults."""
    return {k: v for k, v in asdict(spec).items() if k != "epochs" and not (k in _LATER_FIELDS and v == _LATER_FIELDS[k])}


def buffer_dirname(dataset: str, arch: str, key: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.]+", "_", f"{dataset.lower()}-{arch}")
    return f"{safe}-{key}"


# ---------------------------------------------------------------------------------------------
# flat parameter vectors


def flat_params(net: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def set_flat_params(net: nn.Module, flat: Tensor) -> None:
    with torch.no_grad():
        offset = 0
        for p in net.parameters():
            n = p.numel()
            p.copy_(flat[offset : offset + n].view_as(p))
            offset += n


def param_layout(net: nn.Module) -> list[list[Any]]:
    return [[name, list(p.shape)] for name, p in net.named_parameters()]


def build_expert_net(spec: ExpertSpec, data: ImageData, seed: int | None) -> nn.Module:
    return build_network(spec.arch, data.channels, data.image_size, data.num_classes, seed=seed, **spec.net_kwargs())


# ---------------------------------------------------------------------------------------------
# training one expert


def expert_seed(spec: ExpertSpec, index: int) -> int:
    return derive_seed(spec.seed, "mtt-expert", index)


def train_expert_epochs(
    net: nn.Module, spec: ExpertSpec, data: ImageData, index: int, first_epoch: int, device: torch.device, on_epoch,
    last_epoch: int | None = None, curriculum: Curriculum | None = None,
) -> None:
    """Train ``net`` (already at the parameters after ``first_epoch`` epochs) up to ``last_epoch``
    (default spec.epochs), calling ``on_epoch(epoch_done, flat_params, train_loss, train_acc)``
    after each epoch. A ``curriculum`` (PAD) restricts each epoch to its scheduled samples."""
    if spec.selection and curriculum is None:
        raise UserError(f"experts with data selection {spec.selection!r} need their curriculum (the method that owns them builds it)")
    aug = DiffAug(spec.dsa_strategy) if spec.dsa_strategy != "none" else None
    params = list(net.parameters())
    x_all, y_all = data.train_x, data.train_y
    seed = expert_seed(spec, index)
    net.train()
    for epoch in range(first_epoch, spec.epochs if last_epoch is None else last_epoch):
        g = generator(seed, "epoch", epoch)
        if curriculum is None:
            order = torch.randperm(len(x_all), generator=g)
        else:
            subset = curriculum.indices(epoch)
            order = subset[torch.randperm(len(subset), generator=g)]
        n = len(order)
        total_loss, correct = 0.0, 0
        for idx in order.split(spec.batch_size):
            idx = idx.to(x_all.device)
            x = x_all[idx].to(device)
            if aug is not None:
                x = aug(x, generator=g)
            y = y_all[idx].to(device)
            if spec.optimizer == "gsam":
                grads, loss, out = gsam_direction(lambda: _loss_and_out(net, x, y), params, spec.rho, spec.gsam_alpha, spec.adaptive)
            else:
                loss, out = _loss_and_out(net, x, y)
                grads = torch.autograd.grad(loss, params)
            with torch.no_grad():  # SGD without momentum or weight decay (as the reference experts)
                torch._foreach_add_(params, grads, alpha=-spec.lr)
            total_loss += float(loss.detach()) * len(idx)
            correct += int((out.argmax(1) == y).sum())
        on_epoch(epoch + 1, flat_params(net), total_loss / n, correct / n)


def _loss_and_out(net: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    out = net(x)
    return F.cross_entropy(out, y), out


@torch.no_grad()
def test_accuracy(net: nn.Module, data: ImageData, device: torch.device, batch_size: int = 2048) -> float:
    net.eval()
    correct = 0
    for start in range(0, len(data.test_x), batch_size):
        x = data.test_x[start : start + batch_size].to(device)
        correct += int((net(x).argmax(1) == data.test_y[start : start + batch_size].to(device)).sum())
    net.train()
    return correct / max(1, len(data.test_x))


# ---------------------------------------------------------------------------------------------
# the buffer


def _atomic_write_text(path: Path, text: str) -> None:
    def write(f) -> None:
        f.write(text.encode())
        os.fchmod(f.fileno(), 0o644)  # mkstemp makes 0600; buffers are meant to be shared

    atomic_write(path, write)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            value = json.load(f)
        return value if isinstance(value, dict) else None
    except (OSError, ValueError):
        return None


class ExpertBuffer:
    """One key's directory of expert trajectories (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike, dataset: str, key: str, spec: ExpertSpec, curriculum: Curriculum | None = None) -> None:
        self.root = Path(resolve_buffer_dir(root))
        self.key = key
        self.spec = spec
        self.curriculum = curriculum  # needed to build experts with data selection (PAD), not to read them
        self.path = self.root / buffer_dirname(dataset, spec.arch, key)

    def __repr__(self) -> str:
        return f"ExpertBuffer({str(self.path)!r})"

    # -- paths
    def expert_path(self, i: int) -> Path:
        return self.path / f"expert_{i:04d}.npy"

    def marker_path(self, i: int) -> Path:
        return self.path / f"expert_{i:04d}.json"

    def partial_path(self, i: int) -> Path:
        return self.path / f"expert_{i:04d}.partial.npy"

    def progress_path(self, i: int) -> Path:
        return self.path / f"expert_{i:04d}.partial.json"

    def lock_path(self, i: int) -> Path:
        return self.path / f"expert_{i:04d}.lock"

    @property
    def manifest_path(self) -> Path:
        return self.path / "buffer.json"

    # -- status
    def _finished(self, i: int) -> dict[str, Any] | None:
        """Expert i's marker if it validly records a finished array (any number of epochs)."""
        m = _read_json(self.marker_path(i))
        if m is None or m.get("format") != FORMAT_VERSION or m.get("key") != self.key or m.get("index") != i:
            return None
        if not isinstance(m.get("epochs"), int):
            return None
        try:
            size = os.path.getsize(self.expert_path(i))
        except OSError:
            return None
        return m if size == m.get("bytes") else None

    def marker(self, i: int) -> dict[str, Any] | None:
        """The finished expert's record, or None when expert i is not (validly) finished to spec.epochs."""
        m = self._finished(i)
        return m if m is not None and m["epochs"] >= self.spec.epochs else None

    def is_done(self, i: int) -> bool:
        return self.marker(i) is not None

    def missing(self, count: int) -> list[int]:
        return [i for i in range(count) if not self.is_done(i)]

    def manifest(self) -> dict[str, Any] | None:
        return _read_json(self.manifest_path)

    # -- building
    @contextlib.contextmanager
    def _lock(self, i: int) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover
            yield
            return
        with open(self.lock_path(i), "a") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _describe_data(self, data: ImageData) -> dict[str, Any]:
        return {
            "name": data.name, "data_id": data_id(data) if data.fingerprint else None, "transform": list(data.transform),
            "image_shape": list(data.image_shape), "num_classes": data.num_classes, "train_size": len(data.train_x),
        }

    def check_manifest(self, data: ImageData, layout: list[list[Any]]) -> None:
        """Write buffer.json once; on later builds refuse data that does not fit the buffer."""
        want = {"format": FORMAT_VERSION, "key": self.key, "spec": _keyed_spec(self.spec), "data": self._describe_data(data), "layout": layout}
        have = self.manifest()
        if have is None:
            _atomic_write_text(self.manifest_path, json.dumps(want, indent=1, default=str))
            return
        for field in ("image_shape", "num_classes", "train_size", "transform"):
            if have.get("data", {}).get(field) != want["data"][field]:
                raise UserError(
                    f"expert buffer {self.path} was built on data with {field}={have.get('data', {}).get(field)!r}, but this "
                    f"data has {want['data'][field]!r}: the job was given the wrong data (or delete the buffer directory)"
                )
        if have.get("layout") != json.loads(json.dumps(layout)):
            raise UserError(f"expert buffer {self.path} holds a different network layout; delete the directory to rebuild it")

    def build(self, i: int, data: ImageData, device: torch.device, on_epoch: EpochCallback | None = None) -> bool:
        """Train expert i up to ``spec.epochs`` unless it is that far already (idempotent; safe
        against concurrent builders). ``on_epoch(epochs_done, target)`` reports each epoch.
        Returns True when this call trained (some of) it."""
        if self.is_done(i):
            return False
        self.path.mkdir(parents=True, exist_ok=True)
        with self._lock(i):
            if self.is_done(i):  # another process finished it while we waited
                return False
            self._build_locked(i, data, torch.device(device), on_epoch)
            return True

    def epochs_built(self, i: int) -> int:
        """How many epochs expert i has finished and recorded (0 when none)."""
        m = self._finished(i)
        return int(m["epochs"]) if m is not None else 0

    def _start_rows(self, i: int, shape: tuple[int, int], net: nn.Module, device: torch.device) -> tuple[np.ndarray, int, dict[str, Any]]:
        """The partial array to train into, the epochs already in it and their history: a partial
        build to resume (grown to ``shape`` if it was shorter), a finished shorter expert to extend,
        or a fresh array holding the initial weights. Sets ``net`` to the last valid row."""
        partial, progress = self.partial_path(i), self.progress_path(i)
        history: dict[str, Any] = {"train_loss": [], "train_acc": [], "seconds": 0.0}
        source, done, in_place = None, 0, False
        rec = _read_json(progress)
        if rec is not None and rec.get("key") == self.key and rec.get("index") == i and partial.is_file():
            try:
                arr = np.load(partial, mmap_mode="r")
                if arr.dtype == np.float32 and arr.ndim == 2 and arr.shape[1] == shape[1] and list(arr.shape) == rec.get("shape"):
                    source, done, history = arr, int(rec["epochs_done"]), rec.get("history", history)
                    shape = (max(shape[0], arr.shape[0]), shape[1])  # never shrink a longer build in progress
                    in_place = arr.shape == shape  # long enough: train on in the partial file itself
            except (OSError, ValueError, KeyError):
                source = None
        if source is None:
            have = self.epochs_built(i)
            if have > 0:
                arr = np.load(self.expert_path(i), mmap_mode="r")
                if arr.dtype == np.float32 and arr.shape == (have + 1, shape[1]):
                    m = self._finished(i) or {}
                    source, done = arr, have
                    history = {"train_loss": list(m.get("train_loss", [])), "train_acc": list(m.get("train_acc", [])), "seconds": float(m.get("seconds", 0.0))}
                    log.info("expert %d of %s: extending from %d to %d epochs", i, self.path.name, have, shape[0] - 1)
        if in_place:
            rows = np.lib.format.open_memmap(partial, mode="r+")
        else:
            tmp = partial.with_name(partial.name + ".grow")
            rows = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
            if source is not None:
                rows[: done + 1] = source[: done + 1]
            else:
                rows[0] = flat_params(net).cpu().numpy()
            rows.flush()
            del rows, source
            os.replace(tmp, partial)  # noqa: atomic (a flushed memmap; the progress file below says how far it is valid)
            _atomic_write_text(progress, json.dumps({"key": self.key, "index": i, "shape": list(shape), "epochs_done": done, "history": history}))
            rows = np.lib.format.open_memmap(partial, mode="r+")
        if done > 0:
            set_flat_params(net, torch.from_numpy(np.array(rows[done])).to(device))
            log.info("expert %d of %s: continuing after epoch %d", i, self.path.name, done)
        return rows, done, history

    def _build_locked(self, i: int, data: ImageData, device: torch.device, on_epoch: EpochCallback | None = None) -> None:
        spec = self.spec
        t0 = time.perf_counter()
        net = build_expert_net(spec, data, seed=expert_seed(spec, i)).to(device)
        layout = param_layout(net)
        self.check_manifest(data, layout)
        num_params = sum(p.numel() for p in net.parameters())
        rows, done, history = self._start_rows(i, (spec.epochs + 1, num_params), net, device)
        target = rows.shape[0] - 1
        shape = list(rows.shape)
        partial, progress = self.partial_path(i), self.progress_path(i)
        elapsed0 = float(history.get("seconds", 0.0))

        def after_epoch(epoch: int, flat: Tensor, loss: float, acc: float) -> None:
            rows[epoch] = flat.cpu().numpy()
            rows.flush()
            history["train_loss"].append(loss)
            history["train_acc"].append(acc)
            history["seconds"] = elapsed0 + time.perf_counter() - t0
            if epoch < target:  # the record that makes a restart resume here
                _atomic_write_text(progress, json.dumps({"key": self.key, "index": i, "shape": shape, "epochs_done": epoch, "history": history}))
            if on_epoch is not None:
                on_epoch(epoch, target)

        train_expert_epochs(net, spec, data, i, done, device, after_epoch, last_epoch=target, curriculum=self.curriculum)
        del rows
        with open(partial, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(partial, self.expert_path(i))  # noqa: atomic (flushed memmap promoted; its marker is written after)
        marker = {
            "format": FORMAT_VERSION, "key": self.key, "index": i, "epochs": target, "num_params": num_params,
            "bytes": os.path.getsize(self.expert_path(i)), "test_acc": test_accuracy(net, data, device),
            **history, "seconds": elapsed0 + time.perf_counter() - t0,
        }
        _atomic_write_text(self.marker_path(i), json.dumps(marker))
        with contextlib.suppress(OSError):
            progress.unlink()
        log.info("expert %d of %s: %d epochs in %.1fs, test acc %.3f", i, self.path.name, target, marker["seconds"], marker["test_acc"])

    def ensure(self, count: int, data: ImageData, device: torch.device, progress: BuildProgress | None = None) -> list[int]:
        """Build (sequentially) every missing expert among the first ``count``; returns those built.
        ``progress(epochs_done, epochs_total)`` counts the epochs this call trains, so a caller can
        show an ETA for the whole build."""
        todo = {i: self.spec.epochs - self.epochs_built(i) for i in self.missing(count)}
        total, done = sum(todo.values()), 0
        built = []
        for i in todo:
            base = done

            def on_epoch(epoch: int, target: int, _base: int = base, _first: int = self.spec.epochs - todo[i]) -> None:
                if progress is not None:
                    progress(min(total, _base + epoch - _first), total)

            if self.build(i, data, device, on_epoch):
                built.append(i)
            done = base + todo[i]
        return built

    # -- reading
    def layout(self) -> list[list[Any]] | None:
        m = self.manifest()
        return m.get("layout") if m else None

    def load_epochs(self, i: int, *epochs: int) -> list[Tensor]:
        """The flat parameters of expert i at the given epochs, read lazily (memory-mapped; only
        those rows are touched) and copied out, so nothing stays mapped between calls."""
        if not self.is_done(i):
            raise UserError(f"expert {i} of {self.path} is not built (missing or incomplete)")
        arr = np.load(self.expert_path(i), mmap_mode="r")
        try:
            return [torch.from_numpy(np.array(arr[e], dtype=np.float32)) for e in epochs]
        finally:
            del arr
