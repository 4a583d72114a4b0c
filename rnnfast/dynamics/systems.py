"""What find_fixed_points accepts as a system, turned into the StepMap of one layer."""
import operator

from rnnfast.dynamics.step_map import StepMap
from rnnfast.nn.rnn import RNN

__all__ = ["as_step_map", "layer_weights"]


def layer_weights(rnn, layer=0, direction=0):
    """(W_xh, W_hh, b) of one layer and direction of an ``rnnfast.RNN``, by torch's names.

    W_xh is ``weight_ih_l{layer}`` (H, D or num_directions * H), W_hh ``weight_hh_l{layer}``
    (H, H), b ``bias_ih_l{layer} + bias_hh_l{layer}`` (H,) or None without bias; with the
    suffix ``_reverse`` for direction 1. The layer's own arrays (b is a new sum).
    """
    suffix = "_reverse" if direction else ""
    params = rnn.parameters()
    b = None
    if rnn.bias:
        b = params[f"bias_ih_l{layer}{suffix}"] + params[f"bias_hh_l{layer}{suffix}"]
    return params[f"weight_ih_l{layer}{suffix}"], params[f"weight_hh_l{layer}{suffix}"], b


def _index(value, name, limit, meaning):
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int; got {value!r}")
    try:
        index = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int; got {type(value).__name__} {value!r}") from None
    if not 0 <= index < limit:
        raise ValueError(f"{name} must be in [0, {limit}) ({meaning}); got {index}")
    return index


def _layer_step_map(rnn, layer, direction):
    """The map of one step of a layer of an rnnfast.RNN: an Elman layer, so α = 1."""
    layer = _index(layer, "layer", rnn.num_layers, f"the RNN has {rnn.num_layers} layers")
    direction = _index(direction, "direction", rnn.num_directions,
                       "0 forward, 1 reverse for a bidirectional RNN")
    W_xh, W_hh, b = layer_weights(rnn, layer, direction)
    return StepMap(W_hh, W_xh, b, leak=1.0, nonlinearity=rnn.nonlinearity)


def as_step_map(system, *, layer=0, direction=0):
    """The StepMap of a system: one layer and direction of its recurrence.

    Parameters
    ----------
    system : StepMap, rnnfast.RNN, or a model with an ``rnn`` attribute that is an rnnfast.RNN
        (``rnnfast.charlm.CharRNN``, ``rnnfast.tasks.TaskRNN``).
    layer : int
        Which layer of a stacked RNN. Its input x is the output of the layer below (of size
        num_directions * H), or the model's input for layer 0 (for a CharRNN, a character's
        embedding).
    direction : int
        0 for the forward direction, 1 for the reverse one of a bidirectional RNN.

    Returns
    -------
    StepMap
    """
    if isinstance(system, StepMap):
        if layer != 0 or direction != 0:
            raise ValueError(f"layer and direction apply to an RNN, not to a StepMap; got "
                             f"layer={layer!r}, direction={direction!r}")
        return system
    rnn = system if isinstance(system, RNN) else getattr(system, "rnn", None)
    if not isinstance(rnn, RNN):
        raise TypeError(f"system must be a StepMap, an rnnfast.RNN or a model with an rnn "
                        f"attribute holding one (CharRNN, TaskRNN); got {type(system).__name__}")
    return _layer_step_map(rnn, layer, direction)
