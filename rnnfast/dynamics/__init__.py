"""What a trained RNN computes: its fixed points and their linearisation (Sussillo & Barak 2013).

``find_fixed_points`` runs many searches, batched, from states the network visits
(``sample_states``) to the fixed points of F(h) = (1 - α) h + α f(W_hh h + W_xh x + b) under a
constant input, and returns them with the eigenvalues of the Jacobian there (``FixedPoints``).
The system is a ``StepMap`` (any weights, leaky or not), or one layer of an ``rnnfast.RNN`` or
of a model holding one. ``principal_components`` gives the axes to look at them in.

Nothing here prints; ``rnnfast dynamics`` (rnnfast/cli/dynamics.py) is the command line.
"""
from rnnfast.dynamics.fixed_points import FixedPoints, find_fixed_points
from rnnfast.dynamics.projection import principal_components
from rnnfast.dynamics.sampling import sample_states
from rnnfast.dynamics.step_map import StepMap
from rnnfast.dynamics.systems import as_step_map

__all__ = ["find_fixed_points", "FixedPoints", "StepMap", "as_step_map",
           "sample_states", "principal_components"]
