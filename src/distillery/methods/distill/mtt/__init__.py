"""MTT (matching training trajectories) with TESLA's constant-memory gradient, and its expert buffer.

buffer.py   expert training and the content-addressed on-disk buffer (lazy, atomic, resumable)
matching.py the trajectory-matching loss and its gradient: unrolled | tesla | tesla_exact
method.py   the registered ``mtt`` method, its config and per-dataset/IPC defaults, the prep jobs
gsam.py     GSAM, the update FTD/DATM/PAD train their experts with
selection.py PAD's difficulty ranking (EL2N) and easy-to-hard schedule for expert training
trajectory.py the registered ``ftd``, ``datm`` and ``pad`` methods on MTT's loop
"""

from .buffer import ExpertBuffer, ExpertSpec, buffer_key, data_id, default_buffer_dir, resolve_buffer_dir
from .matching import MEMORY_MODES, FlatNet, Step, match_loss, matching_grads, plan_steps
from .method import MTT, ExpertJob, MTTConfig, table_row

__all__ = [
    "ExpertBuffer", "ExpertSpec", "buffer_key", "data_id", "default_buffer_dir", "resolve_buffer_dir",
    "MEMORY_MODES", "FlatNet", "Step", "match_loss", "matching_grads", "plan_steps",
    "MTT", "ExpertJob", "MTTConfig", "table_row",
]
