"""The scalar checks every module uses (rnnfast.utils.validation): ints, reals in a range,
bools, seeds; each error names the argument, what was expected and what was given."""
import math

import numpy as np
import pytest

from rnnfast.utils.validation import (check_bool, check_int, check_real, check_seed,
                                      int_range_text, random_generator, real_range_text)


@pytest.mark.parametrize("value, low, high, expected", [
    (3, None, None, 3), (np.int64(7), 1, None, 7), (1, 1, 1, 1), (-5, None, 0, -5)])
def test_check_int_accepts_integers_in_range(value, low, high, expected):
    result = check_int(value, "n", low, high)
    assert result == expected and type(result) is int


@pytest.mark.parametrize("value, low, high, error, message", [
    (True, None, None, TypeError, "n must be an int; got True"),
    (np.bool_(False), None, None, TypeError, "n must be an int"),
    (2.0, None, None, TypeError, "n must be an int; got float 2.0"),
    ("3", None, None, TypeError, "n must be an int; got str '3'"),
    (0, 1, None, ValueError, "n must be an integer >= 1; got 0"),
    (10, 1, 9, ValueError, "n must be an integer from 1 to 9; got 10"),
    (1, None, 0, ValueError, "n must be an integer <= 0; got 1"),
])
def test_check_int_rejects_naming_the_argument(value, low, high, error, message):
    with pytest.raises(error) as excinfo:
        check_int(value, "n", low, high)
    assert str(excinfo.value).startswith(message)


@pytest.mark.parametrize("kwargs, good, bad", [
    ({}, [-1e300, 0.0, 5], [math.inf, -math.inf, math.nan]),
    ({"low": 0.0}, [0.0, 1e300], [-1e-300, math.inf, math.nan]),
    ({"low": 0.0, "include_low": False}, [1e-300, 2], [0.0, -1.0, math.inf]),
    ({"low": 0.0, "high": 1.0}, [0.0, 0.999], [1.0, -0.1, math.nan]),
    ({"low": 0.0, "high": math.inf, "include_low": False, "include_high": True},
     [math.inf, 1e-9], [0.0, math.nan, -math.inf]),
])
def test_check_real_ranges(kwargs, good, bad):
    for value in good:
        assert check_real(value, "x", **kwargs) == float(value)
    text = real_range_text(**kwargs)
    for value in bad:
        with pytest.raises(ValueError) as excinfo:
            check_real(value, "x", **kwargs)
        assert str(excinfo.value) == f"x must be {text}; got {float(value)!r}"


@pytest.mark.parametrize("kwargs, text", [
    ({}, "a finite number"), ({"low": 0.0}, "a finite number >= 0"),
    ({"low": 0.0, "include_low": False}, "a finite number > 0"),
    ({"low": 0.0, "high": 1.0}, "a number in [0, 1)"),
    ({"low": 0.0, "high": math.inf, "include_low": False, "include_high": True},
     "a number > 0 (inf allowed)"),
])
def test_range_texts_read_as_words(kwargs, text):
    assert real_range_text(**kwargs) == text


def test_int_range_texts():
    assert int_range_text(1) == "an integer >= 1"
    assert int_range_text(1, 9) == "an integer from 1 to 9"
    assert int_range_text() == "an integer"


@pytest.mark.parametrize("value", [True, "1.0", None, [1.0], 1 + 2j])
def test_check_real_rejects_what_is_not_a_real_number(value):
    with pytest.raises(TypeError, match="^x must be a real number; got"):
        check_real(value, "x")


def test_check_bool_is_strict():
    assert check_bool(np.bool_(True), "flag") is True
    for value in (1, "yes", None, np.array([True])):
        with pytest.raises(TypeError, match="^flag must be a bool"):
            check_bool(value, "flag")


def test_seeds():
    assert check_seed(None) is None and check_seed(np.int32(4)) == 4
    generator = np.random.default_rng(0)
    assert check_seed(generator) is generator and random_generator(generator) is generator
    assert random_generator(3).random() == np.random.default_rng(3).random()
    with pytest.raises(ValueError, match="seed must be >= 0; got -1"):
        check_seed(-1)
    with pytest.raises(TypeError, match="seed must be an int or None; got Generator"):
        check_seed(generator, allow_generator=False)
    for bad in (True, 1.5, "0"):
        with pytest.raises(TypeError, match="^seed must be an int, None or a numpy"):
            random_generator(bad)
