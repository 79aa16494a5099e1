"""Training: supernets (sandwich rule + inplace distillation), fixed networks, joint training; evaluation.

One skeleton (:mod:`~widthsearch.training.skeleton`) runs all three kinds with one recipe
(:class:`~widthsearch.training.recipe.Recipe`); a step trains a list of
:class:`~widthsearch.training.steps.SubnetLoss` terms that a strategy plans.
"""

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
from widthsearch.training.recipe import Recipe
from widthsearch.training.sampling import STRATEGIES, SandwichStrategy, Strategy, get_strategy, sandwich_configs
from widthsearch.training.steps import SubnetLoss, plain_step, subnet_step
from widthsearch.training.retrain import TRAIN_DEFAULTS, load_trained, train_network
from widthsearch.training.slimmable import SUPERNET_DEFAULTS, load_supernet, train_supernet
from widthsearch.training.joint import load_joint, train_joint

__all__ = [
    "STRATEGIES",
    "SUPERNET_DEFAULTS",
    "TRAIN_DEFAULTS",
    "Recipe",
    "SandwichStrategy",
    "Strategy",
    "SubnetLoss",
    "calibration_batches",
    "evaluate",
    "evaluator_for_data",
    "get_strategy",
    "label_loss",
    "load_joint",
    "load_supernet",
    "load_trained",
    "make_supernet_evaluator",
    "plain_step",
    "preserve_bn_state",
    "sandwich_configs",
    "soft_cross_entropy",
    "subnet_step",
    "supernet_accuracy",
    "supernet_metrics",
    "teacher_probs",
    "train_joint",
    "train_network",
    "train_supernet",
]
