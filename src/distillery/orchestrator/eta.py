"""Remaining-time estimates for progress lines (no Ray import: ``distillery trial`` uses it too)."""

from __future__ import annotations


def format_seconds(s: float) -> str:
    s = int(max(0, round(s)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


class PhaseETA:
    """Remaining time of one phase from its rate so far, smoothed (exponential moving average of
    the seconds per unit, weighted by the units since the last update) so one slow step does not
    make the estimate jump."""

    def __init__(self, smoothing: float = 0.3) -> None:
        self.smoothing = smoothing
        self.rate: float | None = None  # seconds per unit
        self.last: tuple[int, float] | None = None

    def update(self, done: int, total: int, now: float) -> float | None:
        if self.last is None:
            self.last = (done, now)
            return None
        d_units, d_time = done - self.last[0], now - self.last[1]
        if d_units > 0:
            sample = d_time / d_units
            self.rate = sample if self.rate is None else (1 - self.smoothing) * self.rate + self.smoothing * sample
            self.last = (done, now)
        return None if self.rate is None else self.rate * max(0, total - done)
