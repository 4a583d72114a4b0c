"""Diagnostics: gradient flow through time (Jacobian norms by lag), spectral radius, saturation
(gradient_flow); the adding problem, its model and training (adding); the experiment of
`rnnfast diagnose` on it (experiment); and the same measurements on a trained character model
(language_model). Nothing here prints."""
from rnnfast.diagnostics.adding import (BASELINE_MSE, EVAL_SEQUENCES, ORTHOGONAL,
                                        RECENT_ONLY_MSE, SOLVED_MSE, AddingModel,
                                        TrainingOutcome, adding_batch, recurrent_matrix,
                                        train_adding)
from rnnfast.diagnostics.experiment import (ADDING_DEFAULTS, GRAD_SEQUENCES, JACOBIAN_SEQUENCES,
                                            AddingExperiment, Curves, Outcome, jacobian_curve,
                                            measure_at_init, per_step, relative_gradient,
                                            run_adding_experiment)
from rnnfast.diagnostics.gradient_flow import (EXACT_MAX_WORK, JACOBIAN_METHODS, TANH_SATURATION,
                                               jacobian_norms, largest_singular_value,
                                               layer_jacobian_norms, layer_states,
                                               resolve_jacobian_method, saturation,
                                               spectral_radius)
from rnnfast.diagnostics.language_model import (WINDOWS, LanguageModelReport,
                                                diagnose_language_model, default_text,
                                                text_windows)

__all__ = ["spectral_radius", "largest_singular_value", "jacobian_norms", "saturation",
           "layer_jacobian_norms", "layer_states", "resolve_jacobian_method", "JACOBIAN_METHODS",
           "EXACT_MAX_WORK", "TANH_SATURATION",
           "adding_batch", "recurrent_matrix", "AddingModel", "TrainingOutcome", "train_adding",
           "BASELINE_MSE", "RECENT_ONLY_MSE", "SOLVED_MSE", "ORTHOGONAL", "EVAL_SEQUENCES",
           "ADDING_DEFAULTS", "GRAD_SEQUENCES", "JACOBIAN_SEQUENCES", "Curves", "Outcome",
           "AddingExperiment", "run_adding_experiment", "measure_at_init", "jacobian_curve",
           "relative_gradient", "per_step",
           "WINDOWS", "default_text", "text_windows", "LanguageModelReport",
           "diagnose_language_model"]
