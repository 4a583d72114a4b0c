"""Checks at the API edge. The kernels run without bounds checks, so everything is checked here,
once, with messages that name the argument, what was expected and what was given."""
import operator

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# BLAS takes its dimensions as 32-bit ints.
MAX_DIM = np.iinfo(np.int32).max


def check_choice(value, name, choices):
    """Return value if it is one of choices, else raise ValueError listing them."""
    if not isinstance(value, str) or value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {listed}; got {value!r}")
    return value


def as_float_array(value, name, layout):
    """Convert value to a C-contiguous float32/float64 array with len(layout) dimensions.

    layout names the dimensions for messages, e.g. ("T", "B", "D"). Never modifies value; copies
    only when it is not already C-contiguous.
    """
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} could not be converted to a numeric array: {exc}") from None
    if array.dtype not in FLOAT_DTYPES:
        if array.dtype.type in (np.float32, np.float64):  # the other byte order
            array = array.astype(array.dtype.newbyteorder("="))
        else:
            raise TypeError(f"{name} must have dtype float32 or float64; got {array.dtype}")
    if array.ndim != len(layout):
        raise ValueError(
            f"{name} must be {len(layout)}-D with shape ({', '.join(layout)}); "
            f"got a {array.ndim}-D array with shape {array.shape}"
        )
    if 0 in array.shape or max(array.shape) > MAX_DIM:
        _raise_bad_size(array, name, layout)
    return np.ascontiguousarray(array)


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
    present = {name: a.dtype for name, a in named_arrays.items() if a is not None}
    dtypes = set(present.values())
    if len(dtypes) > 1:
        listed = ", ".join(f"{name} is {dtype}" for name, dtype in present.items())
        raise TypeError(f"all arrays must share one dtype (float32 or float64); got {listed}")
    return dtypes.pop()


def check_bool(value, name):
    """Return value as a bool if it is one (Python's or NumPy's), else raise TypeError naming it.

    Strict on purpose: a flag that changes what a function returns must not be set by a
    truthy array, string or number by mistake.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool (True or False); "
                        f"got {type(value).__name__} {value!r}")
    return bool(value)


def check_size(value, name):
    """Return value as an int >= 1, or raise TypeError/ValueError naming it."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int; got {value!r}")
    try:
        size = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int; got {type(value).__name__} {value!r}") from None
    if not 1 <= size <= MAX_DIM:
        raise ValueError(f"{name} must be between 1 and {MAX_DIM}; got {size}")
    return size


def check_float_dtype(dtype):
    """Return dtype as np.float32 or np.float64, or raise TypeError."""
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
        raise ValueError(f"{name} could not be converted to an array: {exc}") from None
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} must have an integer dtype; got {array.dtype}")
    if array.ndim != len(layout):
        raise ValueError(
            f"{name} must be {len(layout)}-D with shape ({', '.join(layout)}); "
            f"got a {array.ndim}-D array with shape {array.shape}"
        )
    for label, size in zip(layout, array.shape):
        if size == 0:
            raise ValueError(f"{name} has {label} = 0 (shape {array.shape}); every dimension "
                             f"must be at least 1")
    return array


def check_lengths(lengths, B, T):
    """lengths as an intp array of shape (B,) with every value in 1..T, or raise."""
    array = as_int_array(lengths, "lengths", ("B",))
    if array.shape != (B,):
        raise ValueError(f"lengths must have shape (B,) = ({B},) (B from x); got {array.shape}")
    if array.min() < 1 or array.max() > T:
        raise ValueError(f"lengths must be between 1 and T = {T}; got values from "
                         f"{array.min()} to {array.max()}")
    return array.astype(np.intp)


def load_parameters(params, state):
    """Copy ``state`` (name -> array-like) into the arrays of ``params`` (name -> ndarray), in
    place, as torch's load_state_dict does: exactly the same keys and shapes, floating-point
    values, cast to each parameter's dtype. Everything is checked before anything is copied.

    Raises TypeError if state is not a mapping, ValueError naming the key otherwise.
    """
    if not hasattr(state, "keys"):
        raise TypeError(f"state_dict must be a mapping of parameter names to arrays; "
                        f"got {type(state).__name__}")
    check_keys(state, params, "state_dict")
    arrays = {}
    for name, param in params.items():
        array = np.asarray(state[name])
        if array.shape != param.shape:
            raise ValueError(f"state_dict[{name!r}] must have shape {param.shape}; got "
                             f"{array.shape}")
        if array.dtype.kind != "f":
            raise ValueError(f"state_dict[{name!r}] must hold floating-point values (it is cast "
                             f"to the parameter's {param.dtype}); got dtype {array.dtype}")
        arrays[name] = array
    for name, array in arrays.items():
        params[name][...] = array
