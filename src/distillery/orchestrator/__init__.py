"""distillery.orchestrator: Ray Tune sweeps, MLflow tracking, Optuna tuning and the CLI."""
