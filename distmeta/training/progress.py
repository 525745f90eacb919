"""Training progress: a live bar on a terminal, a plain line at intervals anywhere else.

A tqdm bar redraws with carriage returns, which fill a log file, a Ray job's
log or CI output with thousands of partial lines; there a line such as

    maml sinusoid: step 3000/20000 (15%), loss 0.4121, 3100 tasks/s, 12 s, ETA 68 s

every ``every`` seconds says the same.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
    def __init__(self, total: int, initial: int, desc: str, enabled: bool = True, every: float = 30.0,
                 stream=None):
        self.stream = stream or sys.stderr
        self.live = enabled and self.stream.isatty()
        self.plain = enabled and not self.live
        self.total, self.step, self.desc, self.every = total, initial, desc, every
        self.started = self.last = time.monotonic()
        self.first = initial
        self.postfix: dict = {}
        self.bar = tqdm(total=total, initial=initial, unit="step", desc=desc, disable=not self.live, file=self.stream)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def set_postfix(self, postfix: dict) -> None:
        self.postfix = postfix
        self.bar.set_postfix(postfix, refresh=False)

    def update(self, n: int = 1) -> None:
        self.step += n
        self.bar.update(n)
        now = time.monotonic()
        if self.plain and (now - self.last >= self.every or self.step >= self.total):
            self.last = now
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()

    def line(self, now: float) -> str:
        elapsed = now - self.started
        rate = (self.step - self.first) / elapsed if elapsed > 0 else 0.0
        eta = f", ETA {(self.total - self.step) / rate:.0f} s" if rate and self.step < self.total else ""
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        return (f"{self.desc}: step {self.step}/{self.total} ({100 * self.step / self.total:.0f}%){extra}, "
                f"{elapsed:.0f} s{eta}")

    def write(self, line: str) -> None:
        """A line above a live bar, or in the plain stream; nothing when progress is off."""
        if self.live:
            self.bar.write(line, file=self.stream)
        elif self.plain:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        self.bar.close()
