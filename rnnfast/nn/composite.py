"""Models made of named parts (an embedding, an RNN, an output layer...): their parameters,
state dicts and gradients under "<part>.<name>", like the state dict of a torch module with
those submodules."""
from rnnfast.utils.validation import load_parameters

__all__ = ["Composite"]


class Composite:
    """What a model of parts shares. Subclasses set PARTS, the attribute names of the parts,
    each with parameters() and, after its backward pass, grads."""

    PARTS = ()

    def parameters(self):
        """name -> array (the model's own arrays, which an optimizer updates in place)."""
        return {f"{part}.{name}": array for part in self.PARTS
                for name, array in getattr(self, part).parameters().items()}

    def state_dict(self):
        """name -> a copy of each parameter."""
        return {name: array.copy() for name, array in self.parameters().items()}

    def load_state_dict(self, state):
        """Copy parameters in from ``state`` (the keys and shapes of ``state_dict()``; real
        values, cast to the model's dtype). Nothing is loaded if anything does not match."""
        load_parameters(self.parameters(), state)

    def part_grads(self):
        """name -> gradient of every part's last backward pass, keyed like parameters()."""
        return {f"{part}.{name}": grad for part in self.PARTS
                for name, grad in getattr(self, part).grads.items()}
