"""What find_fixed_points accepts as a system, turned into the StepMap of one layer."""
from rnnfast.dynamics.step_map import StepMap
from rnnfast.nn.leaky import kernel_leak
from rnnfast.nn.rnn import RNN

__all__ = ["as_step_map"]


def _layer_step_map(rnn, layer, direction):
    """The map of one step of a layer and direction of an rnnfast.RNN, with the layer's leak."""
    W_xh, W_hh, b = rnn.direction_weights(layer, direction)  # checks layer and direction
    return StepMap(W_hh, W_xh, b, leak=kernel_leak(rnn.leak[layer]),
                   nonlinearity=rnn.nonlinearity)


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
