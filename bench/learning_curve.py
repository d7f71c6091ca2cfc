"""The learning curve of one trial: the synthetic set every N iterations, each evaluated (a benchmark).

    flock /tmp/distillery-heavy.lock .venv/bin/python bench/learning_curve.py datm --ipc 10 --iterations 50 --every 10
    .venv/bin/python bench/learning_curve.py datm --ipc 10 --iterations 0 --set min_syn_lr=0.01 soft_labels=false

Why: a quick check reports one number at the end of a shortened run, which cannot tell a method that
is still climbing from one that got worse (DATM at digits IPC 10: 95.2% at iteration 30, 94.4% at
50). This runs ``run_trial`` once, as ``distillery trial`` does (the method's defaults for the
dataset and IPC, changed only by ``--set``), keeps the resumable state every ``--every`` iterations
and evaluates each snapshot with the same protocol, models and seed as the final set. Each row
prints the accuracy, the learned step size and, for soft labels, how many label rows still point at
their class and their mean top probability. Digits only needs no data; the other sets take
``--data-root``/``--subset`` like bench/conformance.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # distillery without installing it (a GPU box)

import torch  # noqa: E402

from bench.conformance import DATASETS, data_options  # noqa: E402
from distillery.methods.distill import load_all  # noqa: E402,F401  (registers every method)
from distillery.methods.distill.base import Progress, SyntheticSet  # noqa: E402
from distillery.methods.distill.decode import Decoder  # noqa: E402
from distillery.methods.distill.init import labels_for  # noqa: E402
from distillery.methods.trial import TrialSpec, prepare_data, run_trial  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("method")
    p.add_argument("--dataset", default="digits", choices=list(DATASETS))
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--every", type=int, default=10, help="evaluate a snapshot every this many iterations")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="method options, coerced to each option's type as `distillery trial --set` does, e.g. lr_lr=1e-6")
    p.add_argument("--models", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default="/tmp/distillery-data")
    p.add_argument("--subset", type=int, default=500)
    p.add_argument("--test-subset", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    params = {"iterations": args.iterations, **dict(item.split("=", 1) for item in args.set)}  # make_config coerces
    spec = TrialSpec(dataset=args.dataset, method=args.method, ipc=args.ipc, seed=args.seed, n_models=args.models,
                     method_params=params, data=data_options(args.dataset, args))
    snaps: dict[int, dict] = {}
    losses: list[float] = []

    def on_progress(p: Progress) -> None:
        if p.phase != "distill":
            return
        if p.loss is not None:
            losses.append(float(p.loss))
        if p.iteration % args.every == 0 and p.iteration < p.total:
            snaps[p.iteration] = p.state()
            recent = losses[-args.every:]
            lr = snaps[p.iteration].get("lr")
            step = f"step size {float(lr):.3g}, " if lr is not None else ""
            print(f"iteration {p.iteration}/{p.total}: loss (last {len(recent)}) {sum(recent) / max(1, len(recent)):.4f}, "
                  f"{step}{p.elapsed:.0f}s", flush=True)

    final = run_trial(spec, device="cpu", progress_callback=on_progress)
    data = prepare_data(spec)
    rows = [(it, _snapshot_set(s, final.synset, spec, data)) for it, s in sorted(snaps.items())]
    print(f"{'iteration':>9}  {'accuracy %':>10}  {'step size':>9}  labels")
    for it, synset in rows:
        acc = run_trial(spec, device="cpu", synset=synset).summary().mean_acc
        print(f"{it:>9}  {100 * acc:>10.2f}  {_lr(synset):>9}  {_label_note(synset, args.ipc)}", flush=True)
    print(f"{args.iterations:>9}  {100 * final.summary().mean_acc:>10.2f}  {_lr(final.synset):>9}  {_label_note(final.synset, args.ipc)}  (final)")


def _lr(synset: SyntheticSet) -> str:
    return f"{synset.lr:.3g}" if synset.lr is not None else "protocol"


def _snapshot_set(state: dict, final: SyntheticSet, spec: TrialSpec, data) -> SyntheticSet:
    """The set a run stopped at this state would return. A learned-set method (DD, LD, KIP, FRePo,
    RFAD: a state with named ``tensors``) exports it itself; otherwise learned logits are stored as
    probabilities, and a method whose state keeps no labels has fixed ones: the final set's."""
    method = spec.method_impl()
    if "tensors" in state and hasattr(method, "set_from_state"):
        return method.set_from_state(state, data, spec.ipc, spec.resolved_method_config(), spec.seed)
    if "params" in state and final.decoder is not None:  # a parameterised set (HaBa): decode the state's parameters
        decoder = Decoder(final.decoder.name, dict(state["params"]), dict(final.decoder.options))
        return SyntheticSet(decoder.decode().detach(), final.labels, lr=float(state["lr"]) if "lr" in state else final.lr, decoder=decoder)
    labels = state.get("labels", final.labels)
    labels = torch.softmax(labels, dim=1) if labels.is_floating_point() and "labels" in state else labels
    images = state.get("ema", state["images"])
    return SyntheticSet(images, labels, lr=float(state["lr"]) if "lr" in state else final.lr)


def _label_note(synset: SyntheticSet, ipc: int) -> str:
    if not synset.soft_labels:
        return "hard"
    target = labels_for(synset.labels.shape[1], ipc)
    agree = float((synset.labels.argmax(1) == target).float().mean())
    return f"soft: {100 * agree:.0f}% point at their class, mean top probability {float(synset.labels.max(1).values.mean()):.2f}"


if __name__ == "__main__":
    sys.exit(main())
