"""Credentials in URLs never leave the process (the sweep side runs against a real MLflow server in
tests/test_sweep.py::test_tracking_server)."""

from __future__ import annotations

import json

import pytest

from distillery.methods.errors import UserError
from distillery.orchestrator.redact import redact, redacted
from tests.sweep_helpers import REPO


@pytest.mark.parametrize("text,shown", [
    ("postgresql://user:pass@host/db", "postgresql://user:***@host/db"),
    ("mysql+pymysql://root:hunter2@10.0.0.1:3306/optuna", "mysql+pymysql://root:***@10.0.0.1:3306/optuna"),
    ("see http://a:b@h:5000/x?token=abc&y=1 and sqlite:////tmp/m.db", "see http://a:***@h:5000/x?token=***&y=1 and sqlite:////tmp/m.db"),
    ("https://host/path", "https://host/path"),
])
def test_redact_hides_passwords_and_keeps_the_rest(text, shown):
    assert redact(text) == shown


def test_a_tuning_config_with_a_postgresql_storage_is_logged_without_its_password(tmp_path):
    from distillery.orchestrator.tune_config import load_tune_config

    cfg = load_tune_config(REPO / "configs/tune_dm_digits.yaml", {"storage": "postgresql://user:pass@host/db"}, base_dir=tmp_path)
    assert cfg.storage == "postgresql://user:pass@host/db"  # the process keeps the real value to connect with
    logged = json.dumps(redacted(json.loads(cfg.model_dump_json())))  # what tune.yaml holds
    assert "user:***@host/db" in logged and "pass@" not in logged
    with pytest.raises(UserError) as err:
        load_tune_config(REPO / "configs/tune_dm_digits.yaml", {"tracking_uri": "postgres-ql://user:pass@host/db"}, base_dir=tmp_path)
    assert "user:***@host" in str(err.value) and "pass@" not in str(err.value)
