"""A one-line progress bar for training runs budgeted by time and/or steps.

On a terminal the line is redrawn in place (carriage return); elsewhere (a log file, CI) it is
printed as a plain line every ``log_every`` seconds, so logs stay readable. A library such as
tqdm counts iterations towards a known total; a run that stops on a time budget or Ctrl-C needs
its own fraction (the further of time and steps), which is all this does.
"""
import sys
import time

BAR_WIDTH = 24


def format_duration(seconds):
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class Progress:
    """Draws ``step | elapsed/budget [bar] | fields...`` on ``stream``.

    Parameters
    ----------
    seconds_budget, steps_budget : float or None
        The limits of the run (None: no limit of that kind); the bar shows the further one.
    first_step : int
        The step count the run starts from (a resumed run), so the steps budget is total.
    """

    def __init__(self, seconds_budget, steps_budget, first_step=0, stream=None, log_every=10.0):
        self.seconds_budget = seconds_budget
        self.steps_budget = steps_budget
        self.first_step = first_step
        self.stream = sys.stderr if stream is None else stream
        self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.log_every = log_every
        self._last_log = -float("inf")
        self._logged_step = None
        self._drawn = False

    def fraction(self, elapsed, step):
        fractions = []
        if self.seconds_budget:
            fractions.append(elapsed / self.seconds_budget)
        if self.steps_budget:
            span = max(self.steps_budget - self.first_step, 1)
            fractions.append((step - self.first_step) / span)
        return min(max(fractions, default=0.0), 1.0)

    def line(self, elapsed, step, fields):
        filled = int(round(self.fraction(elapsed, step) * BAR_WIDTH))
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        budget = f"/{format_duration(self.seconds_budget)}" if self.seconds_budget else ""
        steps = f"/{self.steps_budget}" if self.steps_budget else ""
        parts = [f"step {step}{steps}", f"{format_duration(elapsed)}{budget} [{bar}]"]
        parts += [f"{name} {value}" for name, value in fields.items()]
        return " | ".join(parts)

    def update(self, elapsed, step, fields, force=False):
        now = time.monotonic()
        if self.interactive:
            self.stream.write("\r" + self.line(elapsed, step, fields) + "\033[K")
            self._drawn = True
        elif force or now - self._last_log >= self.log_every:
            self.stream.write(self.line(elapsed, step, fields) + "\n")
            self._last_log = now
            self._logged_step = step
        self.stream.flush()

    def finish(self, elapsed, step, fields):
        """Show where the run ended: a log has its last line; a terminal's line is cleared
        (the caller prints a summary)."""
        if self.interactive:
            self.clear()
        elif self._logged_step != step:
            self.update(elapsed, step, fields, force=True)

    def clear(self):
        """End the redrawn line before other output is printed."""
        if self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._drawn = False
