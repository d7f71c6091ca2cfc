"""The ``distillery trial`` command that reproduces one sweep cell exactly.

A sweep cell and a hand-run trial with the same method, IPC and seed differ silently when the
sweep sets options the trial command leaves at their defaults (network width, evaluation epochs,
resize). Each trial run records this command (MLflow tag ``distillery.trial_command``): it spells
out every option that differs from the trial command's defaults, and tests check that it
resolves to the same trial identity (hash) as the sweep cell.
"""

from __future__ import annotations

import dataclasses
import shlex
from typing import Any

from distillery.methods.data import DatasetOptions
from distillery.methods.eval import EvalConfig
from distillery.methods.trial import TrialSpec

#: fields that change how a result is computed or stored, not what it is (not part of identity)
_NOT_IDENTITY = {"eval": {"vectorize", "test_batch_size"}, "data": {"cache_dir", "download"}}


def _value(v: Any) -> str:
    """A value as ``--set`` parses it back (see methods.distill.base.coerce/parse_scalar)."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def trial_command(spec: TrialSpec) -> str:
    """``distillery trial ...`` whose TrialSpec has the same identity as ``spec``."""
    args = ["distillery", "trial", "--dataset", spec.dataset, "--method", spec.method, "--ipc", "all" if spec.full_data else str(spec.ipc),
            "--seed", str(spec.seed), "--models", str(spec.n_models), "--budget", "paper"]  # sweeps run the paper budget
    for arch in spec.archs:
        args += ["--arch", arch]
    if spec.data.root is not None:
        args += ["--data-root", spec.data.root]
    if spec.data.download:  # not identity, but the trial needs it to fetch missing files as the sweep would
        args.append("--download")
    sets = [f"{k}={_value(v)}" for k, v in sorted(spec.method_params.items())]
    for prefix, value, default in (("eval", spec.eval, EvalConfig()), ("data", spec.data, DatasetOptions())):
        for f in dataclasses.fields(value):
            if f.name in _NOT_IDENTITY[prefix] or (prefix == "data" and f.name == "root"):
                continue
            v = getattr(value, f.name)
            if v != getattr(default, f.name):
                sets.append(f"{prefix}.{f.name}={_value(v)}")
    for arch, options in sorted(spec.arch_options.items()):
        sets += [f"net.{arch}.{k}={_value(v)}" for k, v in sorted(options.items())]
    for item in sets:
        args += ["--set", item]
    return " ".join(shlex.quote(a) for a in args)
