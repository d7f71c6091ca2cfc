"""distillery.analysis: turn a finished sweep into trade-off curves, Pareto fronts, figures and a report.

Pure pandas/numpy/scipy/matplotlib (+ the MLflow client for loading and logging). Nothing here
imports Ray: a sweep can be analysed on any laptop that can read its tracking store.

Modules, one job each:
    load       MLflow runs / Tune result.json files -> one tidy frame, one row per evaluation model
    aggregate  per (dataset, method, arch, ipc) means, stds, t intervals over sets, counts
    fits       named curve models (registry) fitted to metric(IPC), with CIs and AIC/R^2
    trend      does class variance grow with IPC? (Spearman + Welch t interval of the OLS slope over sets, stated in words)
    planner    power of a design: minimal detectable effect, sets needed
    pareto     non-dominated (accuracy, class variance[, cost]) points and exact hypervolume
    figures    matplotlib (Agg) figures saved as PNG + SVG
    report     run_analysis(): everything above -> HTML + CSV (+ MLflow artifacts), summary text
    cli        `distillery analyze`
"""

from .errors import AnalysisError, NoFinishedTrialsError, UnknownExperimentError

__all__ = ["AnalysisError", "NoFinishedTrialsError", "UnknownExperimentError", "run_analysis"]


def __getattr__(name: str):  # lazy: importing the package must not pull in mlflow/matplotlib
    if name == "run_analysis":
        from .report import run_analysis

        return run_analysis
    raise AttributeError(name)
