from .protocol import EvalConfig, EvalProgress, EvalResult, evaluate_synset

__all__ = ["EvalConfig", "EvalProgress", "EvalResult", "evaluate_synset"]
