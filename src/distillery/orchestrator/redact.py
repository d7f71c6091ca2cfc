"""Credentials never leave the process: URLs are redacted wherever distillery prints or logs them.

A tracking or Optuna storage URL may carry a password (``postgresql://user:pass@host/db``,
``http://user:token@host``). Printed lines, the logged ``sweep.yaml``/``tune.yaml`` and MLflow
params go to terminals, CI logs and an MLflow server anyone on the network may read, so each passes
through ``redact``: the user-info of every ``scheme://user:password@`` becomes ``user:***@`` and a
``password=``/``token=``/``secret=`` query value becomes ``***``. The process keeps the real value
to connect with.
"""

from __future__ import annotations

import json
import re
from typing import Any

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^/@\s:]*):(?P<secret>[^@/\s]*)@")
_QUERY = re.compile(r"(?P<key>(?:password|passwd|pwd|token|secret|access_key|api_key)=)[^&\s'\"]*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the passwords of URLs in it replaced by ***."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _QUERY.sub(lambda m: f"{m['key']}***", text)


def redacted(value: Any) -> Any:
    """A JSON-able value (a config dump) with every string redacted."""
    return json.loads(redact(json.dumps(value)))
