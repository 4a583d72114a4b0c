"""Diagnostics: gradient flow through time (Jacobian norms by lag), spectral radius, saturation."""
from rnnfast.diagnostics.gradient_flow import (EXACT_MAX_WORK, JACOBIAN_METHODS, TANH_SATURATION,
                                               jacobian_norms, largest_singular_value,
                                               layer_jacobian_norms, layer_states,
                                               resolve_jacobian_method, saturation,
                                               spectral_radius)

__all__ = ["spectral_radius", "largest_singular_value", "jacobian_norms", "saturation",
           "layer_jacobian_norms", "layer_states", "resolve_jacobian_method", "JACOBIAN_METHODS",
           "EXACT_MAX_WORK", "TANH_SATURATION"]
