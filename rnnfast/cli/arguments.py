"""argparse types shared by the commands: numbers with a range, checked by the library's own
validators (rnnfast.utils.validation). Each error says in words what was expected and what was
given (argparse prefixes the option's name): "argument --minutes: expected a finite number >= 0;
got 'abc'"."""
import argparse

from rnnfast.utils.validation import check_int, check_real, int_range_text, real_range_text


def _argument_type(name, parse, check, expected):
    """An argparse type: ``parse`` the text, then ``check`` the number; on failure an error
    saying ``expected`` (the range in words)."""

    def convert(text):
        try:
            return check(parse(text))
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {expected}; got {text!r}") from None

    convert.__name__ = name
    return convert


def _int_type(name, low):
    return _argument_type(name, int, lambda v: check_int(v, name, low=low), int_range_text(low))


def _real_type(name, **bounds):
    return _argument_type(name, float, lambda v: check_real(v, name, **bounds),
                          real_range_text(**bounds))


positive_int = _int_type("positive_int", 1)
# Seeds too: NumPy's seed sequences take no negative numbers.
non_negative_int = _int_type("non_negative_int", 0)
non_negative_float = _real_type("non_negative_float", low=0.0)
positive_float = _real_type("positive_float", low=0.0, include_low=False)
unit_interval = _real_type("unit_interval", low=0.0, high=1.0)
# A leak α in (0, 1]: the weight of the new activation in each step of a leaky RNN.
leak_fraction = _real_type("leak_fraction", low=0.0, high=1.0, include_low=False,
                           include_high=True)
