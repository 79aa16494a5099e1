"""Factories of users' own models for tests/test_own_model.py (importable as ``own_models:NAME``)."""
from torch import nn


def fixed_classes(width_mult: float = 1.0) -> nn.Module:
    """Three outputs whatever the data: takes no num_classes."""
    w = max(1, round(8 * width_mult))
    return nn.Sequential(nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(w, 3))


def no_width(num_classes: int = 10) -> nn.Module:
    """Takes no width_mult: can only be built at width 1."""
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, num_classes))


def raising(num_classes: int = 10) -> nn.Module:
    raise ValueError("depth must be even")


def not_a_module(num_classes: int = 10) -> int:
    return 42


NOT_CALLABLE = 3
