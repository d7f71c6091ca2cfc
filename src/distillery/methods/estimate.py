"""How long a trial will take on this machine, from a short calibration run.

Distillation and evaluation costs depend on the method, the IPC, the image size, the network and
the device in ways no table predicts well (a DC iteration at IPC 10 costs ~30x one at IPC 1 on a
CPU), so the estimate measures instead of modelling: it runs the method for ``calibration_iterations``
iterations (2: the second one's time is the per-iteration cost, free of first-call warm-up) and
trains one of the resulting set's evaluation models per arch (all K when they are vectorised)
for ``calibration_epochs`` epochs and tests it on a slice of the test split, then scales each
part to the real run. The calibration's results are thrown away; its draws come from the trial's own
seed (``TrialSpec.cell_seed``, as in ``run_trial``), so it exercises the trial's draws and changes
nothing the trial does. A method's preparation (MTT's expert build) runs inside
the calibration when it is missing, with its own progress, and is then cached for the trial.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from .data.base import ImageData
from .distill.base import Progress, ProgressCallback
from .eval import EvalConfig, EvalProgress, evaluate_synset
from .trial import TrialSpec, prepare_data
from .utils.device import resolve_device


@dataclasses.dataclass(frozen=True)
class TrialEstimate:
    """Seconds a trial is expected to take, and what the figure rests on."""

    iterations: int | None  # the trial's iterations (None: not an iterative method)
    seconds_per_iteration: float | None
    distill_seconds: float  # the whole distillation (a non-iterative method: its calibration run)
    eval_seconds: float  # every evaluation model of every arch, test included
    calibration_seconds: float  # what measuring cost (preparation such as an expert build excluded)
    prep_seconds: float  # preparation done during the calibration (e.g. MTT experts), now cached

    @property
    def total_seconds(self) -> float:
        return self.distill_seconds + self.eval_seconds

    def describe(self, format_seconds) -> str:
        """One line: 'estimated ~8m40s: distill ~6m10s (50 x 7.4s), evaluate ~2m30s (...)'."""
        per = f" ({self.iterations} x {self.seconds_per_iteration:.2g}s)" if self.iterations and self.seconds_per_iteration else ""
        prep = f"; preparation already done in {format_seconds(self.prep_seconds)}" if self.prep_seconds >= 1 else ""
        return (
            f"estimated ~{format_seconds(self.total_seconds)}: distill ~{format_seconds(self.distill_seconds)}{per}, "
            f"evaluate ~{format_seconds(self.eval_seconds)} (from a {format_seconds(self.calibration_seconds)} calibration{prep})"
        )


def estimate_trial(
    spec: TrialSpec,
    device: torch.device | str = "auto",
    data: ImageData | None = None,
    progress_callback: ProgressCallback | None = None,
    calibration_iterations: int = 2,
    calibration_epochs: int = 2,
) -> TrialEstimate:
    """Measure ``spec``'s costs with a short run (see the module docstring). ``progress_callback``
    receives preparation-phase reports (e.g. '[experts] 3/30') so a long build is visible."""
    spec.validate()
    dev = resolve_device(device)
    method = spec.method_impl()
    config = spec.resolved_method_config()
    data = prepare_data(spec, data)
    on_device = data.to(dev) if dev.type != "cpu" else data
    iterations = getattr(config, "iterations", None)
    calib = calibration_iterations if iterations is None else max(1, min(calibration_iterations, iterations))
    calib_config = config if iterations is None else dataclasses.replace(config, iterations=calib)

    marks: dict[int, float] = {}
    prep = {"seconds": 0.0}

    def on_progress(p: Progress) -> None:
        if p.phase == "distill":
            marks[p.iteration] = time.perf_counter()
        else:
            prep["seconds"] = p.elapsed
            if progress_callback is not None:
                progress_callback(p)

    t0 = time.perf_counter()
    synset = method.distill(on_device, spec.ipc, calib_config, spec.cell_seed, dev, on_progress, None)
    calib_distill = time.perf_counter() - t0 - prep["seconds"]
    per_iteration: float | None = None
    if iterations is not None:
        if calib >= 2 and calib in marks and 1 in marks:
            per_iteration = (marks[calib] - marks[1]) / (calib - 1)
        else:
            per_iteration = calib_distill / calib
    distill_seconds = calib_distill if iterations is None else per_iteration * iterations

    eval_seconds, t_eval = 0.0, time.perf_counter()
    real_epochs = spec.eval.epochs_for(synset)
    short = dataclasses.replace(spec.eval, epochs=calibration_epochs, full_data_epochs=calibration_epochs)
    for arch in spec.archs:
        eval_seconds += _eval_seconds(synset, on_device, arch, spec, short, real_epochs, dev)
    calibration = (time.perf_counter() - t0 - prep["seconds"])
    return TrialEstimate(iterations, per_iteration, distill_seconds, eval_seconds, calibration, prep["seconds"])


#: test images the calibration classifies; the test pass is linear in the split's size, so a
#: slice times it well and a 10k-image split is not run per shape (on a CPU that took ~45 s a model)
CALIBRATION_TEST_IMAGES = 1000


def _eval_seconds(synset: Any, data: ImageData, arch: str, spec: TrialSpec, short: EvalConfig, real_epochs: int, dev: torch.device) -> float:
    """One arch's evaluation time, from one short run scaled to the real one.

    Models trained one after another (the CPU default) cost K times one, so one model is
    calibrated and its cost multiplied by K; vectorised models (one batched pass for all K) are
    calibrated together. The per-epoch time is taken after the first epoch (past warm-up) and
    scaled to the real epoch count; the test pass runs on a slice of the test split and is scaled
    by the split's size; what remains of the measured time (model construction, warm-up) is added
    as measured."""
    vectorized = short.vectorize if short.vectorize is not None else dev.type != "cpu"
    used = spec.n_models if vectorized else 1
    per_model = spec.n_models / used
    n_test = len(data.test_x)
    m = max(1, min(n_test, CALIBRATION_TEST_IMAGES))
    sliced = dataclasses.replace(data, test_x=data.test_x[:m], test_y=data.test_y[:m])
    stamps: list[tuple[EvalProgress, float]] = []
    t0 = time.perf_counter()
    result = evaluate_synset(synset, sliced, arch, used, short, seed=spec.cell_seed, device=dev,
                             net_options=dict(spec.arch_options.get(arch, {})),
                             epoch_callback=lambda p: stamps.append((p, time.perf_counter())))
    measured = time.perf_counter() - t0
    test = result.test_seconds * (n_test / m) * per_model
    if len(stamps) < 2:
        training = result.train_seconds * max(1, real_epochs) / max(1, short.epochs)
        return max(0.0, measured - result.train_seconds - result.test_seconds) + training * per_model + test
    (p0, s0), (p1, s1) = stamps[0], stamps[-1]  # from the end of the first unit: past warm-up
    per_unit = (s1 - s0) / max(1, p1.done - p0.done)  # one model-epoch (or one epoch of all models together)
    units_real = p1.total // max(1, short.epochs) * real_epochs
    overhead = max(0.0, measured - per_unit * p1.total - result.test_seconds)
    return overhead + per_unit * units_real * per_model + test
