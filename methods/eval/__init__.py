from .protocol import EvalConfig, EvalResult, evaluate_synset

__all__ = ["EvalConfig", "EvalResult", "evaluate_synset"]
