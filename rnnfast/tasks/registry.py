"""The tasks by name, as the command line and checkpoints refer to them."""
from rnnfast.tasks.decisions import ContextDependentIntegration, PerceptualDecision
from rnnfast.tasks.flipflop import FlipFlop
from rnnfast.tasks.memory import DelayedMatchToSample

__all__ = ["TASKS", "make_task"]

TASKS = {task.name: task for task in (FlipFlop, PerceptualDecision, ContextDependentIntegration,
                                      DelayedMatchToSample)}


def make_task(name, **settings):
    """The task called ``name`` (a key of TASKS) with the given settings (its fields)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; the tasks are {', '.join(TASKS)}")
    return TASKS[name](**{key: tuple(value) if isinstance(value, list) else value
                          for key, value in settings.items()})
