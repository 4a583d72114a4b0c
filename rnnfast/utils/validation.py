"""Checks at the API edge. The kernels run without bounds checks, so everything is checked here,
once, with messages that name the argument, what was expected and what was given."""
import math
import numbers
import operator
from collections.abc import Mapping

import numpy as np

from rnnfast.utils.memory import check_allocation  # a copy is checked before it is made

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# BLAS takes its dimensions as 32-bit ints.
MAX_DIM = np.iinfo(np.int32).max


def check_choice(value, name, choices):
    """Return value if it is one of choices, else raise ValueError listing them."""
    if not isinstance(value, str) or value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {listed}; got {value!r}")
    return value


def float_array(value, name, layout):
    """value as a float32/float64 array with len(layout) dimensions, checked, but not copied.

    The first half of as_float_array: the result may be a view (non-contiguous, a zero-stride
    broadcast of any size, or of the other byte order). Callers check every shape and the
    memory they need (check_allocation, with copy_size for the copy) before ``contiguous``
    copies anything: a huge view whose copy cannot fit must fail before work starts.
    layout names the dimensions for messages, e.g. ("T", "B", "D").
    """
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise _conversion_error(name, "a numeric array", exc) from None
    # Either byte order is fine (the common case first: this runs for every array of a call).
    if array.dtype not in FLOAT_DTYPES and array.dtype.newbyteorder("=") not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64; got {array.dtype}")
    if array.ndim != len(layout):
        raise _ndim_error(array, name, layout)
    if 0 in array.shape or max(array.shape) > MAX_DIM:
        _raise_bad_size(array, name, layout)
    return array


# The errors of the checks below, worded once. The checks test inline and call these only to
# raise: float_array runs for every array of every call, where a function call costs.
def _conversion_error(name, what, exc):
    return ValueError(f"{name} could not be converted to {what}: {exc}")


def _ndim_error(array, name, layout):
    return ValueError(f"{name} must be {len(layout)}-D with shape ({', '.join(layout)}); "
                      f"got a {array.ndim}-D array with shape {array.shape}")


def native_dtype(array):
    """The dtype a checked float array has once contiguous: float32 or float64, native order."""
    dtype = array.dtype
    return dtype if dtype.isnative else dtype.newbyteorder("=")


def copy_size(array, name, layout):
    """The buffer ``contiguous(array)`` allocates, as check_allocation takes it, or None."""
    if array.flags.c_contiguous and array.dtype.isnative:
        return None
    return (f"a contiguous copy of {name} ({', '.join(layout)})", array.shape, native_dtype(array))


def contiguous(array):
    """array as a C-contiguous array in native byte order (itself when it already is one)."""
    if array.flags.c_contiguous and array.dtype.isnative:
        return array
    return np.ascontiguousarray(array, dtype=native_dtype(array))


def as_float_array(value, name, layout, caller=None):
    """Convert value to a C-contiguous float32/float64 array with len(layout) dimensions.

    float_array, then the copy (only when value is not already C-contiguous and native),
    after checking that it fits in memory. Never modifies value. caller names the public
    function in a MemoryError's message.
    """
    array = float_array(value, name, layout)
    check_allocation(caller or name, [copy_size(array, name, layout)])
    return contiguous(array)


def _raise_bad_size(array, name, layout):
    for label, size in zip(layout, array.shape):
        if size == 0:
            raise ValueError(f"{name} has {label} = 0 (shape {array.shape}); every dimension "
                             f"must be at least 1")
        if size > MAX_DIM:
            raise ValueError(f"{name} has {label} = {size} (shape {array.shape}); the largest "
                             f"supported dimension is {MAX_DIM}")


def check_shape(array, name, layout, expected, source):
    """Raise ValueError if array's shape differs from expected, naming the first bad dimension.

    layout labels the dimensions ("B", "H"); source says where the expected sizes come from.
    """
    if array.shape == tuple(expected):
        return
    for axis, (label, want, got) in enumerate(zip(layout, expected, array.shape)):
        if want != got:
            raise ValueError(
                f"{name} must have shape ({', '.join(layout)}) = {tuple(expected)} {source}; "
                f"got {array.shape} (dimension {axis}, {label}, is {got}, expected {want})"
            )


def check_same_dtype(named_arrays):
    """Raise TypeError unless every array (name -> array or None) has one dtype; return it."""
    present = {name: native_dtype(a) for name, a in named_arrays.items() if a is not None}
    dtypes = set(present.values())
    if len(dtypes) > 1:
        listed = ", ".join(f"{name} is {dtype}" for name, dtype in present.items())
        raise TypeError(f"all arrays must share one dtype (float32 or float64); got {listed}")
    return dtypes.pop()


# ---------------------------------------------------------------------------------------------
# Scalars: the one set of checks every module uses for its int, real, bool and seed arguments.
# ---------------------------------------------------------------------------------------------
def check_bool(value, name):
    """Return value as a bool if it is one (Python's or NumPy's), else raise TypeError naming it.

    Strict on purpose: a flag that changes what a function returns must not be set by a
    truthy array, string or number by mistake.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool (True or False); "
                        f"got {type(value).__name__} {value!r}")
    return bool(value)


def int_range_text(low=None, high=None):
    """How check_int words its range: "an integer >= 1", "an integer from 1 to 9"."""
    if low is not None and high is not None:
        return f"an integer from {low} to {high}"
    if low is not None:
        return f"an integer >= {low}"
    return "an integer" if high is None else f"an integer <= {high}"


def check_int(value, name, low=None, high=None):
    """Return value as a Python int in [low, high] (None: no bound), or raise naming it.

    TypeError unless value is an integer (Python's or NumPy's; bools are not); ValueError when
    it is out of range.
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int; got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int; got {type(value).__name__} {value!r}") from None
    if (low is not None and number < low) or (high is not None and number > high):
        raise ValueError(f"{name} must be {int_range_text(low, high)}; got {number}")
    return number


def check_size(value, name):
    """Return value as an int from 1 to MAX_DIM (a dimension BLAS can take), or raise."""
    return check_int(value, name, low=1, high=MAX_DIM)


def real_range_text(low=-math.inf, high=math.inf, include_low=True, include_high=False):
    """How check_real words its range: "a finite number > 0", "a number in [0, 1)"."""
    if high == math.inf and not include_high:
        if low == -math.inf:
            return "a finite number"
        return f"a finite number {'>=' if include_low else '>'} {low:g}"
    if high == math.inf:
        return f"a number {'>=' if include_low else '>'} {low:g} (inf allowed)"
    return (f"a number in {'[' if include_low else '('}{low:g}, {high:g}"
            f"{']' if include_high else ')'}")


def check_real(value, name, low=-math.inf, high=math.inf, include_low=True, include_high=False):
    """Return value as a Python float in the range from low to high, or raise naming it.

    The bounds are included or not as include_low and include_high say; the defaults accept
    every finite number (NaN and -inf never pass; inf only where high is inf and include_high).
    TypeError unless value is a real number (Python's or NumPy's; bools are not).
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__} {value!r}")
    number = float(value)
    above = (number >= low if include_low else number > low) and number != -math.inf
    below = number <= high if include_high else number < high
    if not (above and below):
        text = real_range_text(low, high, include_low, include_high)
        raise ValueError(f"{name} must be {text}; got {number!r}")
    return number


def check_seed(seed, allow_generator=True):
    """Return seed if it is None, an int >= 0 or (with allow_generator) a numpy Generator, else
    raise TypeError/ValueError naming it (NumPy's seed sequences take no negative numbers)."""
    if seed is None or (allow_generator and isinstance(seed, np.random.Generator)):
        return seed
    kinds = "an int, None or a numpy.random.Generator" if allow_generator else "an int or None"
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be {kinds}; got {type(seed).__name__} {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0; got {seed}")
    return int(seed)


def random_generator(seed):
    """np.random.Generator from an int seed >= 0, None (fresh entropy) or a Generator (used as
    is), or raise TypeError/ValueError naming seed."""
    seed = check_seed(seed)
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def check_float_dtype(dtype):
    """Return dtype as np.float32 or np.float64, or raise TypeError."""
    if dtype is None:  # np.dtype(None) is float64, which is not the layers' default (float32)
        raise TypeError("dtype must be float32 or float64; got None")
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64; got {dtype!r}") from None
    if resolved not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64; got {resolved}")
    return resolved


def check_keys(given, expected, what):
    """Raise ValueError unless the mapping ``given`` has exactly the keys of ``expected``,
    naming the missing and the unexpected ones."""
    missing = [key for key in expected if key not in given]
    unexpected = [key for key in given if key not in expected]
    if missing or unexpected:
        raise ValueError(f"{what} must have exactly the keys {list(expected)}; missing: "
                         f"{missing}, unexpected: {unexpected}")


def as_int_array(value, name, layout):
    """Convert value to an integer array with len(layout) >= 1 dimensions, none of size 0."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise _conversion_error(name, "an array", exc) from None
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} must have an integer dtype; got {array.dtype}")
    if array.ndim != len(layout):
        raise _ndim_error(array, name, layout)
    for label, size in zip(layout, array.shape):
        if size == 0:
            raise ValueError(f"{name} has {label} = 0 (shape {array.shape}); every dimension "
                             f"must be at least 1")
    return array


def check_index_range(array, name, upper, upper_name, where=None):
    """Raise ValueError, naming the first bad value and its position, unless every entry of the
    integer array lies in [0, upper) (upper_name says what upper is, for the message).

    Only the positions where ``where`` is True are checked (all when where is None).
    """
    bad = (array < 0) | (array >= upper)
    if where is not None:
        bad &= where
    if bad.any():
        position = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), array.shape))
        raise ValueError(f"{name} must lie in [0, {upper_name}) = [0, {upper}); got "
                         f"{array[position]} at position {position}")


def check_lengths(lengths, B, T):
    """lengths as an integer array of shape (B,) with every value in 1..T, or raise.

    Not copied (it may be a view of any size): callers cast it to intp once the memory the
    call needs is checked."""
    array = as_int_array(lengths, "lengths", ("B",))
    if array.shape != (B,):
        raise ValueError(f"lengths must have shape (B,) = ({B},) (B from x); got {array.shape}")
    if array.min() < 1 or array.max() > T:
        raise ValueError(f"lengths must be between 1 and T = {T}; got values from "
                         f"{array.min()} to {array.max()}")
    return array


def may_overlap_itself(array):
    """Whether two elements of array may share memory (a zero or overlapping stride, from
    np.broadcast_to or as_strided): such an array cannot be updated in place element by element.

    A sufficient test of distinctness: with the dimensions sorted by stride, each stride must
    step over everything the smaller ones reach. Slices, transposes and reversals of an array
    always pass; only hand-made strides can fail it without overlapping.
    """
    if array.size == 0:
        return False
    reach = array.itemsize
    for stride, size in sorted((abs(s), n) for s, n in zip(array.strides, array.shape) if n > 1):
        if stride < reach:
            return True
        reach += stride * (size - 1)
    return False


def unwrap_scalar(value, name):
    """A Python scalar from value, which may be one already, a NumPy scalar or a 0-d array (what
    np.load gives back for a scalar saved with np.savez); TypeError naming it for a larger
    array."""
    if isinstance(value, np.ndarray):
        if value.ndim != 0:
            raise TypeError(f"{name} must be a scalar; got an array of shape {value.shape}")
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value


def check_entries(state, shapes, label, kinds="fiu",
                  kind_text="real numbers (a float or integer dtype)"):
    """The arrays ``state[key]`` for every key of ``shapes`` (key -> expected shape), each
    converted with np.asarray (not copied) and checked: a dtype of one of the NumPy ``kinds``
    and the expected shape. For state dicts, which are checked in full before anything is
    loaded. ``label`` names the mapping in messages.

    Raises ValueError if an entry cannot be converted or has another shape, TypeError if its
    dtype is of another kind.
    """
    arrays = {}
    for key, shape in shapes.items():
        try:
            array = np.asarray(state[key])
        except (TypeError, ValueError) as exc:
            raise _conversion_error(f"{label}[{key!r}]", "an array", exc) from None
        if array.dtype.kind not in kinds:
            raise TypeError(f"{label}[{key!r}] must hold {kind_text}; got {array.dtype}")
        if array.shape != shape:
            raise ValueError(f"{label}[{key!r}] must have shape {shape}; got {array.shape}")
        arrays[key] = array
    return arrays


def check_writable_float_arrays(arrays, label, action):
    """dict name -> array of ``arrays``, each checked to be a writable float32/float64 ndarray
    (``action``: what is done to it in place, for the messages)."""
    checked = {}
    for name, array in arrays.items():
        if not isinstance(array, np.ndarray):
            raise TypeError(f"{label}[{name!r}] must be a NumPy array (it is {action} in place); "
                            f"got {type(array).__name__}")
        if array.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{label}[{name!r}] must have dtype float32 or float64 (native byte "
                            f"order); got {array.dtype}")
        if not array.flags.writeable:
            raise ValueError(f"{label}[{name!r}] is read-only; it is {action} in place")
        if may_overlap_itself(array):  # each element would be updated once per alias
            raise ValueError(f"{label}[{name!r}] has elements that share memory (strides "
                             f"{array.strides} for shape {array.shape}, as np.broadcast_to or "
                             f"as_strided make); it is {action} in place, element by element")
        checked[name] = array
    return checked


def load_parameters(params, state):
    """Copy ``state`` (name -> array-like) into the arrays of ``params`` (name -> ndarray), in
    place, as torch's load_state_dict does: exactly the same keys and shapes, real values (float
    or integer dtypes), cast to each parameter's dtype. Everything is checked before anything is
    copied, so nothing is loaded when anything is wrong.

    Raises TypeError if state is not a mapping or a value is not real (bool, complex, object,
    strings), ValueError naming the key otherwise.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"state_dict must be a mapping of parameter names to arrays; "
                        f"got {type(state).__name__}")
    check_keys(state, params, "state_dict")
    arrays = check_entries(state, {name: param.shape for name, param in params.items()},
                           "state_dict", kind_text="real numbers (a float or integer dtype, "
                                                   "cast to the parameter's dtype)")
    for name, array in arrays.items():
        params[name][...] = array
