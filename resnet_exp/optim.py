"""Optimisers and learning-rate schedules from Keras, configured in step units.

Schedules are stated in fractions of training (He et al. 2016 divide the rate
by 10 at 50% and 75%), converted to optimiser steps once the number of steps
per epoch is known. Weight decay is Keras's decoupled decay, so the loss (and
the gradients the probe measures) stays the data loss alone.
"""

from __future__ import annotations

from typing import Any

import keras


def learning_rate(
    schedule: str, lr: float, total_steps: int, milestones: list[float], gamma: float
) -> Any:
    if schedule == "constant":
        return lr
    if schedule == "step":
        boundaries = [max(1, int(round(m * total_steps))) for m in milestones]
        values = [lr * gamma**i for i in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, total_steps))
    raise ValueError(f"unknown schedule {schedule!r}; choose from constant, step, cosine")


def make_optimizer(
    name: str,
    *,
    lr: float,
    total_steps: int,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    schedule: str = "constant",
    milestones: list[float] | None = None,
    gamma: float = 0.1,
) -> keras.optimizers.Optimizer:
    rate = learning_rate(schedule, lr, total_steps, list(milestones or []), gamma)
    decay = weight_decay or None
    if name == "sgd":
        return keras.optimizers.SGD(
            learning_rate=rate, momentum=momentum, nesterov=nesterov, weight_decay=decay
        )
    if name == "adam":
        return keras.optimizers.AdamW(learning_rate=rate, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose from sgd, adam")


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The rate the optimiser applies at its next step."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
