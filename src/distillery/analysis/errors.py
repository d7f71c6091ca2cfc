"""Errors a user can cause when analysing a sweep.

They subclass methods.errors.UserError (a ValueError), so the `distillery` CLI prints them as one
line and exits 2 instead of showing a traceback. Every message names the offending value and the fix.
"""

from __future__ import annotations

from distillery.methods.errors import UserError


class AnalysisError(UserError):
    """Bad analysis input a user can fix (experiment name, run id, tracking URI, directory)."""


class UnknownExperimentError(AnalysisError):
    """The experiment / parent run / tracking store named by the user does not exist."""


class NoFinishedTrialsError(AnalysisError):
    """The sweep exists but has no FINISHED trial with per-class results to analyse."""
