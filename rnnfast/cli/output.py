"""Text output of the commands: tables, durations and numbers, and charts made of characters.

The one table formatter and the one text chart (a sparkline per curve on a common log scale)
of the command line; the commands print what these return.
"""
import math
import sys

import numpy as np

CHART_WIDTH = 50
CHART_DECADES = 12  # the text chart's log scale spans at most this many powers of ten
BARS = "▁▂▃▄▅▆▇█"
ASCII_BARS = "_.-=+*%#"


# -- numbers and durations ---------------------------------------------------------------------

def format_seconds(seconds):
    """A duration with a unit that keeps 3-4 significant digits: µs, ms or s."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.3f} s"


def format_duration(seconds):
    """A clock duration: m:ss, or h:mm:ss from an hour."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def format_number(value):
    """Two significant digits, in scientific notation outside [0.01, 1000); "nan", "inf"."""
    if value is None or not np.isfinite(value):
        return "nan" if value is not None and np.isnan(value) else str(value)
    return f"{value:.2g}" if 1e-2 <= abs(value) < 1e3 else f"{value:.1e}"


# -- tables ------------------------------------------------------------------------------------

def format_table(headers, rows, left_columns=1, indent="", rule=True):
    """Lines of a plain-text table: the first ``left_columns`` columns left-aligned, the rest
    right-aligned, each line starting with ``indent``; ``rule``: a line of dashes under the
    headers."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]

    def line(cells):
        return indent + "  ".join(str(cell).ljust(w) if i < left_columns else str(cell).rjust(w)
                                  for i, (cell, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [line(headers)]
    if rule:
        lines.append(line(["-" * w for w in widths]))
    return lines + [line(row) for row in rows]


# -- charts ------------------------------------------------------------------------------------

def chart_bars(stream=None):
    """The chart's characters: block elements where ``stream`` (stdout) can encode them, ASCII
    elsewhere."""
    encoding = getattr(sys.stdout if stream is None else stream, "encoding", None) or "ascii"
    try:
        BARS.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return ASCII_BARS
    return BARS


def log_range(curves, decades=CHART_DECADES):
    """(lo, hi): log10 of the smallest and largest positive finite values of the curves, lo
    raised to hi - decades if the values span more."""
    values = np.concatenate([np.asarray(c, dtype=np.float64).ravel() for c in curves])
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return 0.0, 0.0
    hi = float(np.log10(values.max()))
    return max(float(np.log10(values.min())), hi - decades), hi


def _columns(values, width):
    """The indices of ``width`` evenly spaced values (all of them when there are fewer)."""
    return np.unique(np.round(np.linspace(0, len(values) - 1, min(width, len(values))))
                     .astype(int))


def sparkline(values, lo, hi, width=CHART_WIDTH, bars=BARS):
    """One character per column, its height log10(value) on the scale lo..hi (log10 values).

    Columns sample the values evenly (every value when there are at most ``width``); zero is a
    blank, NaN or inf a '?'.
    """
    values = np.asarray(values, dtype=np.float64)
    chars = []
    for v in values[_columns(values, width)]:
        if not np.isfinite(v):
            chars.append("?")
        elif v <= 0:
            chars.append(" ")
        else:
            level = 0.5 if hi <= lo else (math.log10(v) - lo) / (hi - lo)
            chars.append(bars[min(len(bars) - 1, max(0, int(level * len(bars))))])
    return "".join(chars)


def linear_sparkline(values, bars, width=CHART_WIDTH):
    """Fractions in [0, 1] as a sparkline on a linear scale (0 a blank)."""
    values = np.asarray(values, dtype=np.float64)
    return "".join(" " if v <= 0 else bars[min(len(bars) - 1, int(v * len(bars)))]
                   for v in values[_columns(values, width)])


def chart_lines(named_curves, what, indent="  "):
    """A text chart: one sparkline per curve on a common log scale, lag 0 at the left, each
    followed by its last value."""
    lo, hi = log_range(list(named_curves.values()))
    bars = chart_bars()
    T = max(len(c) for c in named_curves.values())
    width = max(len(name) for name in named_curves)
    lowest = log_range(list(named_curves.values()), decades=math.inf)[0]
    floor = " or less" if lowest < lo else ""
    lines = [f"{indent}{what}, log scale: {bars[0]} = 1e{round(lo):+d}{floor} ... {bars[-1]} = "
             f"1e{round(hi):+d}; lag 0 at the left, lag {T - 1} at the right"]
    for name, curve in named_curves.items():
        lines.append(f"{indent}{name.ljust(width)}  {sparkline(curve, lo, hi, bars=bars)}  "
                     f"{format_number(curve[-1])}")
    return lines
