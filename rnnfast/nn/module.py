"""What every layer and model shares: parameters by name, state dicts, training mode, and the
checks of the arrays that flow through a layer.

``Module`` is the base of the layers (``RNN``, ``Linear``, ``Embedding``), which hold their
parameters in ``self._params`` (name -> array) and their last gradients in ``self.grads``;
``Composite`` is the base of models made of named layers (``CharRNN``), whose parameters and
gradients are named "<part>.<name>", as in the state dict of the equivalent torch module.
"""
from rnnfast.utils.memory import check_allocation
from rnnfast.utils.validation import (check_bool, check_shape, contiguous, copy_size, float_array,
                                      load_parameters, native_dtype)

__all__ = ["Module", "Composite"]


class Module:
    """Parameters, state dicts and the training flag of a layer (as ``torch.nn.Module``'s).

    Subclasses set ``self._params`` (name -> ndarray) in ``__init__``.
    """

    training = True  # dropout and the like are on; ``eval()`` turns them off

    def parameters(self):
        """The parameters, name -> array. The arrays themselves (not copies): an optimizer
        updates them in place."""
        return dict(self._params)

    def state_dict(self):
        """The parameters, name -> a copy of the array (safe to keep while training goes on)."""
        return {name: array.copy() for name, array in self.parameters().items()}

    def load_state_dict(self, state_dict):
        """Copy arrays into the parameters, in place (references from ``parameters()`` stay
        valid).

        Parameters
        ----------
        state_dict : mapping of str to array_like
            Exactly the keys of ``parameters()``, each with the parameter's shape and real
            values (a float or integer dtype), cast to the parameter's dtype as torch's
            load_state_dict does: a PyTorch state dict converted to NumPy loads as is.

        Raises
        ------
        TypeError
            state_dict is not a mapping, or holds values that are not real numbers.
        ValueError
            A missing or unexpected key, or an array whose shape differs from the parameter's.
            Nothing is loaded then.
        """
        load_parameters(self.parameters(), state_dict)

    def train(self, mode=True):
        """Training mode (dropout on) or, with mode=False, evaluation mode; returns self."""
        self.training = check_bool(mode, "mode")
        return self

    def eval(self):
        """Evaluation mode (no dropout); returns self."""
        return self.train(False)

    # -- checks of the arrays a layer takes ---------------------------------------------------

    def _check_dtype(self, array, name):
        """Raise TypeError unless array has the layer's dtype (no silent casts)."""
        if native_dtype(array) != self.dtype:
            raise TypeError(f"{name} must have the layer's dtype, {self.dtype}; got "
                            f"{array.dtype}")

    def _forward_shape(self):
        """(T, B) of the last forward pass, recorded in ``_shape`` by the layers over time, or
        RuntimeError when there was none."""
        if self._shape is None:
            owner = type(self).__name__
            raise RuntimeError(f"{owner}.backward called before {owner}.forward")
        return self._shape

    def _upstream_gradient(self, grad, name, layout, size, source, result):
        """The gradient dL/d(output) of the last forward pass, (T, B, size), checked against it
        and made contiguous: the start of the backward pass of a layer over time.

        ``layout`` names the dimensions for messages, ``source`` says where the expected sizes
        come from, ``result`` is the buffer the backward pass allocates (for check_allocation).
        """
        T, B = self._forward_shape()
        grad = float_array(grad, name, layout)
        self._check_dtype(grad, name)
        check_shape(grad, name, layout, (T, B, size), source)
        check_allocation(f"{type(self).__name__}.backward",
                         [copy_size(grad, name, layout), result])
        return contiguous(grad)


class Composite(Module):
    """A model made of the layers named in ``PARTS`` (attributes of the model).

    Its parameters and gradients are those of its parts, named "<part>.<name>"
    ("rnn.weight_hh_l0"); ``train()`` and ``eval()`` switch every part.
    """

    PARTS = ()

    def parts(self):
        """The layers of the model, part name -> layer, in ``PARTS`` order."""
        return {name: getattr(self, name) for name in self.PARTS}

    def parameters(self):
        """name -> array (the parts' own arrays, which an optimizer updates in place)."""
        return {f"{part}.{name}": array for part, layer in self.parts().items()
                for name, array in layer.parameters().items()}

    @property
    def grads(self):
        """The parts' gradients from their last backward pass, keyed like ``parameters()``."""
        return {f"{part}.{name}": grad for part, layer in self.parts().items()
                for name, grad in layer.grads.items()}

    def train(self, mode=True):
        super().train(mode)
        for layer in self.parts().values():
            layer.train(self.training)
        return self
