"""Optimizers (SGD with momentum, Adagrad, Adam) and gradient clipping, in NumPy (Adam's update
in one compiled pass, with the same bits), with ``torch.optim``'s update rules and
``torch.nn.utils``' clipping formulas, and state dicts that save and restore exactly (see
``Optimizer``)."""
from rnnfast.train.optim.clipping import clip_grad_norm, clip_grad_value
from rnnfast.train.optim.optimizer import Optimizer
from rnnfast.train.optim.rules import SGD, Adagrad, Adam

__all__ = ["Optimizer", "SGD", "Adagrad", "Adam", "clip_grad_value", "clip_grad_norm"]
