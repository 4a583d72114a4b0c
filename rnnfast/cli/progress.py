"""The one progress display of the commands, and the bar of a run budgeted by time and steps.

``Progress`` shows a status line on stderr: redrawn in place on a terminal (carriage return);
elsewhere (a log file, CI) printed as plain lines, at most one every ``log_every`` seconds, so
logs stay readable. ``budget_line`` draws ``step | elapsed/budget [bar] | fields...`` for
`rnnfast train`: a library such as tqdm counts iterations towards a known total, while a run that
stops on a time budget or Ctrl-C needs its own fraction (the further of time and steps).
"""
import sys
import time

from rnnfast.cli.output import format_duration

BAR_WIDTH = 24


class Progress:
    """A status line on ``stream`` (default stderr).

    Parameters
    ----------
    stream : file or None
    log_every : float or None
        Off a terminal: print a line at most every this many seconds (0: every update; None:
        never, for a status that only helps someone watching).
    """

    def __init__(self, stream=None, log_every=10.0):
        self.stream = sys.stderr if stream is None else stream
        self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.log_every = log_every
        self._last_log = -float("inf")
        self._unlogged = False  # an update since the last logged line
        self._drawn = False

    def show(self, text, force=False):
        """Show ``text``; off a terminal ``force`` prints it whatever the time since the last
        line (unless log_every is None)."""
        if self.interactive:
            self.stream.write("\r" + text + "\033[K")
            self._drawn = True
        elif self.log_every is not None:
            now = time.monotonic()
            if force or now - self._last_log >= self.log_every:
                self.stream.write(text + "\n")
                self._last_log = now
                self._unlogged = False
            else:
                self._unlogged = True
        self.stream.flush()

    def finish(self, text):
        """Where the run ended: a log gets ``text`` as its last line (unless the last update
        was logged already); a terminal's line is cleared (the caller prints a summary)."""
        if self.interactive:
            self.clear()
        elif self._unlogged:
            self.show(text, force=True)

    def clear(self):
        """End the redrawn line before other output is printed."""
        if self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._drawn = False


def budget_fraction(elapsed, step, seconds_budget, steps_budget, first_step=0):
    """How far a run is, in [0, 1]: the further of elapsed / seconds_budget and of the steps
    done since ``first_step`` (a resumed run's start) towards ``steps_budget`` (either None:
    no limit of that kind)."""
    fractions = []
    if seconds_budget:
        fractions.append(elapsed / seconds_budget)
    if steps_budget:
        span = max(steps_budget - first_step, 1)
        fractions.append((step - first_step) / span)
    return min(max(fractions, default=0.0), 1.0)


def budget_line(elapsed, step, fields, seconds_budget, steps_budget, first_step=0):
    """``step k/N | m:ss/m:ss [####....] | name value | ...``."""
    fraction = budget_fraction(elapsed, step, seconds_budget, steps_budget, first_step)
    filled = int(round(fraction * BAR_WIDTH))
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    budget = f"/{format_duration(seconds_budget)}" if seconds_budget else ""
    steps = f"/{steps_budget}" if steps_budget else ""
    parts = [f"step {step}{steps}", f"{format_duration(elapsed)}{budget} [{bar}]"]
    parts += [f"{name} {value}" for name, value in fields.items()]
    return " | ".join(parts)
