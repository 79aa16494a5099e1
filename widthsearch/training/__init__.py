"""Supernet training (sandwich rule + inplace distillation), evaluation and retraining."""

from widthsearch.training.evaluate import (
    calibration_batches,
    evaluate,
    evaluator_for_data,
    make_supernet_evaluator,
    preserve_bn_state,
    supernet_accuracy,
    supernet_metrics,
)
from widthsearch.training.losses import label_loss, soft_cross_entropy, teacher_probs
from widthsearch.training.sampling import STRATEGIES, SandwichStrategy, get_strategy, sandwich_configs
from widthsearch.training.steps import plain_step, sandwich_step
from widthsearch.training.retrain import TRAIN_DEFAULTS, load_trained, train_network
from widthsearch.training.supernet import SUPERNET_DEFAULTS, load_supernet, train_supernet

__all__ = [
    "STRATEGIES",
    "SUPERNET_DEFAULTS",
    "TRAIN_DEFAULTS",
    "SandwichStrategy",
    "calibration_batches",
    "evaluate",
    "evaluator_for_data",
    "get_strategy",
    "label_loss",
    "load_supernet",
    "load_trained",
    "make_supernet_evaluator",
    "plain_step",
    "preserve_bn_state",
    "sandwich_configs",
    "sandwich_step",
    "soft_cross_entropy",
    "supernet_accuracy",
    "supernet_metrics",
    "teacher_probs",
    "train_network",
    "train_supernet",
]
