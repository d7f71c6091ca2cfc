"""``distillery sweep CONFIG --dry-run --plan``: what a sweep's design can detect, before launch.

For each (dataset, method, arch) series of the config, the planner (``analysis.planner``) prints the
minimal rise of class variance from the smallest to the largest IPC that the verdict finds with the
config's power (``stats.power``) at its alpha (``stats.alpha``, Holm's worst case over the series),
the power at the target rise (``stats.target_effect``) and the sets per IPC that rise needs. Beside
``--estimate`` a user trades certainty against hours.

Noise: from a finished sweep (``--pilot EXPERIMENT`` in the config's tracking store; per series,
else that network's median over the pilot's series) or the documented defaults
(``planner.DEFAULT_TOTAL_SD``). The config is already validated; this reads nothing else.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from distillery.analysis.planner import Design, Noise, default_noise, minimal_detectable_effect, power, sets_needed
from distillery.methods.errors import UserError

from .config import SweepConfig
from .redact import redact

METRIC = "class_var"


@dataclass(frozen=True)
class SeriesPlan:
    dataset: str
    method: str
    arch: str
    ipcs: tuple[int, ...]
    sets: int
    models: int
    noise: Noise
    mde: float | None  # None: the design cannot give a verdict (why in ``note``)
    power_at_target: float | None
    sets_for_target: int | None
    note: str = ""


def pilot_noise(config: SweepConfig, experiment: str) -> dict[tuple[str, str, str], Noise]:
    """Set/model noise of class variance per (dataset, method, arch) series of a finished sweep."""
    from distillery.analysis.errors import AnalysisError
    from distillery.analysis.load import load_mlflow
    from distillery.analysis.planner import estimate_noise

    try:
        data = load_mlflow(config.tracking_uri, experiment)
    except AnalysisError as exc:
        raise UserError(f"--pilot {experiment}: {exc}") from None
    models = data.models
    out: dict[tuple[str, str, str], Noise] = {}
    if models.empty:
        raise UserError(f"--pilot {experiment}: no finished trials in {redact(config.tracking_uri)}; name a sweep that has results")
    for (ds, method, arch), g in models[~models["full_data"]].groupby(["dataset", "method", "arch"]):
        noise = estimate_noise(g, METRIC, source=f"pilot {experiment}")
        if noise is not None:
            out[(str(ds).lower(), str(method), str(arch).lower())] = noise
    if not out:
        raise UserError(f"--pilot {experiment}: no series has two sets at one IPC, so its set-to-set noise is unknown; "
                        "use a pilot sweep with at least 2 seeds")
    return out


def _noise_for(ds: str, method: str, arch: str, pilot: dict[tuple[str, str, str], Noise] | None) -> Noise:
    if pilot:
        if (ds, method, arch) in pilot:
            return pilot[(ds, method, arch)]
        same_arch = [n for (_, _, a), n in pilot.items() if a == arch]
        if same_arch:
            return Noise(statistics.median(n.set_sd for n in same_arch), statistics.median(n.model_sd for n in same_arch),
                         f"{same_arch[0].source}, {arch}'s median over its series")
    return default_noise(arch)


def plan_sweep(config: SweepConfig, pilot: dict[tuple[str, str, str], Noise] | None = None, seed: int = 0) -> list[SeriesPlan]:
    """One SeriesPlan per (dataset, method, arch) of the config."""
    st = config.stats
    series = [(d.name.lower(), method, arch.lower(), tuple(sorted(entry.ipcs or config.ipcs)))
              for d in config.datasets for method, entry in config.methods.items() for arch in config.eval.archs]
    n_series = max(1, sum(len(ipcs) >= 3 for *_, ipcs in series))
    sets, models = len(config.seeds), config.eval.models
    out = []
    for ds, method, arch, ipcs in series:
        noise = _noise_for(ds, method, arch, pilot)
        sd = noise.set_mean_sd(models)
        common = dict(dataset=ds, method=method, arch=arch, ipcs=ipcs, sets=sets, models=models, noise=noise)
        if len(ipcs) < 3:
            out.append(SeriesPlan(**common, mde=None, power_at_target=None, sets_for_target=None,
                                  note=f"{len(ipcs)} IPC value(s): a trend needs at least 3"))
            continue
        needed = sets_needed(ipcs, models, noise, st.target_effect, st.alpha, target=st.power, n_series=n_series,
                             seed=seed)
        if sets < 2:
            out.append(SeriesPlan(**common, mde=None, power_at_target=None, sets_for_target=needed,
                                  note="1 set per IPC: no interval about sets, so no verdict; use seeds: 2 or more"))
            continue
        design = Design.balanced(ipcs, sets, models)
        mde = minimal_detectable_effect(design, sd, st.alpha, target=st.power, n_series=n_series, seed=seed)
        pw = power(design, sd, st.target_effect, st.alpha, n_series=n_series, seed=seed)
        out.append(SeriesPlan(**common, mde=mde, power_at_target=pw, sets_for_target=needed))
    return out


def describe_plan(config: SweepConfig, plans: list[SeriesPlan]) -> str:
    """The table ``--plan`` prints."""
    st = config.stats
    n_series = max(1, sum(len(p.ipcs) >= 3 for p in plans))
    target = f"{st.target_effect:+.3g}"
    lines = ["", f"Study plan: what this design detects (class variance, alpha {st.alpha:g} with Holm's worst case over "
                 f"{n_series} series, {st.power:.0%} power; verdict = rank test and Welch slope interval agree):"]
    head = (f"  {'series':<30} {'IPCs':<14} {'sets x models':>13}  {'noise SD set / model':<22} "
            f"{'min. detectable rise':>20}  {'power at ' + target:>16}  {'sets/IPC for ' + target:>18}")
    lines.append(head)
    for p in plans:
        name = f"{p.dataset} {p.method}/{p.arch}"
        span = f"{p.ipcs[0]}..{p.ipcs[-1]} ({len(p.ipcs)})"
        mde = "n/a" if p.mde is None else ("none" if p.mde == float("inf") else f"{p.mde:+.3g}")
        pw = "n/a" if p.power_at_target is None else f"{p.power_at_target:.2f}"
        need = ("n/a" if len(p.ipcs) < 3 else "> 200" if p.sets_for_target is None else str(p.sets_for_target))
        noise = f"{p.noise.set_sd:.2g} / {p.noise.model_sd:.2g}"
        lines.append(f"  {name:<30} {span:<14} {f'{p.sets} x {p.models}':>13}  {noise:<22} {mde:>20}  {pw:>16}  {need:>18}")
        if p.note:
            lines.append(f"      {p.note}")
    sources = sorted({p.noise.source for p in plans})
    lines.append("  min. detectable rise: the smallest rise from the smallest to the largest IPC (linear in IPC) that "
                 f"the verdict 'holds' finds in {st.power:.0%} of simulated sweeps; target {target}: stats.target_effect.")
    lines.append("  noise: " + "; ".join(sources) + (" (set and model SD split evenly)" if any("default" in s for s in sources) else ""))
    return "\n".join(lines)
