"""distillery.methods: pure-PyTorch dataset distillation core.

Nothing in this package imports Ray, MLflow or Optuna, so it runs on any box that has torch
(e.g. a GPU node without the orchestration stack). The orchestrator and the CLI build on it.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
