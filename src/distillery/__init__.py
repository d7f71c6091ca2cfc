"""distillery: a Ray-distributed experiment orchestrator for dataset distillation research.

Three layers, each importable on its own:

- ``distillery.methods``: pure PyTorch (datasets, networks, augmentation, the distillation methods,
  the evaluation protocol, fairness metrics). Installed by ``pip install distillery`` alone, so it
  runs on a GPU box that has torch and nothing else.
- ``distillery.analysis``: pandas/scipy over a sweep's results (``distillery[orchestration]``).
- ``distillery.orchestrator``: Ray Tune, MLflow, Optuna and the CLI (``distillery[orchestration]``).

Importing this package imports none of them.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
