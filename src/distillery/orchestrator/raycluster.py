"""Connecting to Ray: a local instance by default, or a running cluster (``--address``/RAY_ADDRESS).

Ray 2.60 enables token authentication on clusters, but a client process only sends the token when
RAY_AUTH_MODE=token is set; a driver joining a cluster therefore turns token mode on whenever a
token is available (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, or the ~/.ray/auth_token file that
`ray start` writes).

A local instance (no address) keeps token authentication on, since its ports listen on the node's
address, but configured explicitly: Ray's "token authentication is enabled ... set RAY_AUTH_MODE"
warning on every run is about an unset mode, and its default writes ~/.ray/auth_token. The driver
uses the user's token when there is one, otherwise a fresh random token held in this process's
environment (inherited by the instance it starts, gone with it; nothing is written). A mode the user
sets (RAY_AUTH_MODE=disabled or token) is respected as is, with Ray's own messages.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def _token_available() -> bool:
    return (bool(os.environ.get("RAY_AUTH_TOKEN")) or bool(os.environ.get("RAY_AUTH_TOKEN_PATH"))
            or (Path.home() / ".ray" / "auth_token").is_file())


def _enable_token_auth() -> None:
    os.environ["RAY_AUTH_MODE"] = "token"
    try:  # ray reads its config when imported; refresh it so this process sends the token
        from ray._raylet import Config

        Config.initialize("")
    except ImportError:  # other Ray versions read the variable at init time
        pass


def connect(address: str | None = None, num_cpus: int | None = None, num_gpus: float | None = None) -> None:
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune's automatic TensorBoard logger chokes on string lists; JSON/CSV loggers are added explicitly
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return
    if address:
        if "RAY_AUTH_MODE" not in os.environ and _token_available():
            _enable_token_auth()
        ray.init(address=address, log_to_driver=True)
    else:
        if "RAY_AUTH_MODE" not in os.environ:
            if not _token_available():
                os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)  # this driver's private instance only
            _enable_token_auth()
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, log_to_driver=True)
