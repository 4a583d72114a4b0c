"""The classic tasks of computational neuroscience, and a network and trainer for them.

Each task draws seeded batches of trials, ``task.batch(B, seed)`` -> ``TaskBatch(inputs (T, B, D),
targets (T, B, O), mask (T, B))``: ``FlipFlop`` (Sussillo & Barak 2013), ``PerceptualDecision``,
``ContextDependentIntegration`` (Mante et al. 2013) and ``DelayedMatchToSample``. ``TaskRNN`` is
an RNN with a linear readout, ``TaskTrainer`` trains it with the masked mean squared error
(rnnfast.nn.masked_mse), and ``rnnfast.dynamics.find_fixed_points`` then shows how it works.
"""
from rnnfast.tasks.decisions import ContextDependentIntegration, PerceptualDecision
from rnnfast.tasks.flipflop import FlipFlop
from rnnfast.tasks.memory import DelayedMatchToSample
from rnnfast.tasks.model import TaskRNN, load_task_model, task_checkpoint
from rnnfast.tasks.registry import TASKS, make_task
from rnnfast.tasks.trainer import TaskTrainer, evaluate_task
from rnnfast.tasks.trials import Task, TaskBatch

__all__ = ["FlipFlop", "PerceptualDecision", "ContextDependentIntegration",
           "DelayedMatchToSample", "Task", "TaskBatch", "TASKS", "make_task", "TaskRNN",
           "TaskTrainer", "evaluate_task", "task_checkpoint", "load_task_model"]
