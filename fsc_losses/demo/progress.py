"""A one-line progress bar on stderr, so the demo needs no progress library."""

from __future__ import annotations

import sys
import time


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}:{seconds:02d}"


class Progress:
    """Tracks work over the whole run and redraws at most twice a second.

    Steps are weighted by their cost so that the time left stays honest when cheap steps (CLIP
    loss) come before dear ones (1 + K captions per image).

    On a terminal the bar is redrawn in place; when stderr is a file or a pipe (CI logs, tests)
    it prints a plain line every tenth of the way instead, so logs stay short.
    """

    def __init__(self, total: float, stream=None, width: int = 30):
        self.total = max(total, 1e-9)
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.done = 0
        self.phase = ""
        self.note = ""
        self.start = time.monotonic()
        self._last_draw = 0.0
        self._last_tenth = -1
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def set_phase(self, phase: str) -> None:
        self.phase = phase

    def step(self, work: float = 1.0, note: str = "") -> None:
        self.done = min(self.done + work, self.total)
        self.note = note
        now = time.monotonic()
        tenth = int(10 * self.done / self.total)
        if self._tty and (now - self._last_draw >= 0.5 or self.done >= self.total):
            self._last_draw = now
            self.stream.write("\r" + self._line(now) + "\033[K")
            self.stream.flush()
        elif not self._tty and tenth != self._last_tenth:
            self._last_tenth = tenth
            self.stream.write(self._line(now) + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()

    def _line(self, now: float) -> str:
        fraction = self.done / self.total
        filled = int(self.width * fraction)
        elapsed = now - self.start
        # The first steps also pay for set-up, so the estimate waits a little.
        left = f"~{_clock(elapsed / fraction - elapsed)} left" if fraction >= 0.02 else "estimating"
        bar = "#" * filled + "-" * (self.width - filled)
        line = f"[{bar}] {100 * fraction:3.0f}% {_clock(elapsed)} elapsed, {left} | {self.phase} {self.note}"
        return line.rstrip()
