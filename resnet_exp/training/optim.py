"""Optimisers and learning-rate schedules from Keras, configured in step units.

Schedules are stated in fractions of training (He et al. 2016 divide the rate
by 10 at 50% and 75%), converted to optimiser steps once the number of steps
per epoch is known, or directly in iterations (`milestone_steps`: 32k, 48k).
A warm-up (`warmup_steps` at `warmup_lr`, then the schedule) is a schedule too.
Weight decay is Keras's decoupled decay by default, or (`weight_decay_mode=l2`)
the L2 decay of Caffe, Torch and He et al. 2016, added to the gradient so that it
passes through the momentum. Either way the loss (and the gradients the probe
measures) stays the data loss alone.
"""

from __future__ import annotations

from typing import Any

import keras

from resnet_exp.config.schema import OptimConfig, ScheduleConfig


@keras.saving.register_keras_serializable(package="resnet_exp")
class Warmup(keras.optimizers.schedules.LearningRateSchedule):
    """`warmup_lr` for the first `warmup_steps` iterations, then `after` (a rate or schedule).

    He et al. 2016 train ResNet-110 at 0.01 "until the training error is below
    80% (about 400 iterations)", then at 0.1. We switch at a fixed iteration: a
    pure function of the step needs no per-batch read of the training error,
    repeats exactly, and is what the paper reports the switch to have been.
    """

    def __init__(self, after: Any, warmup_steps: int, warmup_lr: float):
        self.after = after
        self.warmup_steps = int(warmup_steps)
        self.warmup_lr = float(warmup_lr)

    def __call__(self, step):
        after = self.after(step) if callable(self.after) else self.after
        after = keras.ops.convert_to_tensor(after, dtype="float32")
        warm = keras.ops.convert_to_tensor(self.warmup_lr, dtype="float32")
        return keras.ops.where(keras.ops.less(step, self.warmup_steps), warm, after)

    def get_config(self) -> dict:
        after = self.after
        if isinstance(after, keras.optimizers.schedules.LearningRateSchedule):
            after = keras.optimizers.schedules.serialize(after)
        return {"after": after, "warmup_steps": self.warmup_steps, "warmup_lr": self.warmup_lr}

    @classmethod
    def from_config(cls, config: dict) -> Warmup:
        after = config["after"]
        if isinstance(after, dict):
            after = keras.optimizers.schedules.deserialize(after)
        return cls(after, config["warmup_steps"], config["warmup_lr"])


@keras.saving.register_keras_serializable(package="resnet_exp")
class L2SGD(keras.optimizers.SGD):
    """SGD whose weight decay is `l2 * w` added to each gradient, before the momentum.

    Keras's `weight_decay` shrinks the weights outside the momentum (w -= lr * wd * w);
    the paper's frameworks add wd * w to the gradient, which the momentum then
    accumulates, so at momentum 0.9 the same wd acts about ten times as strongly.
    """

    def __init__(self, l2: float = 0.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        decay = keras.ops.multiply(keras.ops.cast(self.l2, variable.dtype), variable)
        gradient = keras.ops.add(keras.ops.cast(gradient, variable.dtype), decay)
        super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict:
        return {**super().get_config(), "l2": self.l2}


def learning_rate(schedule: ScheduleConfig, lr: float, total_steps: int) -> Any:
    """The rate, or schedule of rates, that `schedule` (the `optim.schedule` config) gives."""
    rate = _schedule(schedule, lr, total_steps)
    warmup_steps = int(schedule.warmup_steps)
    return Warmup(rate, warmup_steps, float(schedule.warmup_lr)) if warmup_steps > 0 else rate


def _schedule(schedule: ScheduleConfig, lr: float, total_steps: int) -> Any:
    name, gamma = str(schedule.name), float(schedule.gamma)
    if name == "constant":
        return lr
    if name == "step":
        if schedule.milestone_steps is not None:
            boundaries = [int(m) for m in schedule.milestone_steps]
        else:
            boundaries = [max(1, int(round(m * total_steps))) for m in schedule.milestones]
        values = [lr * gamma**i for i in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    if name == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, total_steps))
    raise ValueError(f"unknown schedule {name!r}; choose from constant, step, cosine")


def make_optimizer(spec: OptimConfig, total_steps: int) -> keras.optimizers.Optimizer:
    """The optimiser `spec` (the `optim` config, or an `OptimConfig`) asks for."""
    rate = learning_rate(spec.schedule, float(spec.lr), total_steps)
    name, weight_decay = str(spec.name), float(spec.weight_decay)
    momentum, nesterov = float(spec.momentum), bool(spec.nesterov)
    decay = weight_decay or None
    if name == "sgd" and spec.weight_decay_mode == "l2":
        return L2SGD(l2=weight_decay, learning_rate=rate, momentum=momentum, nesterov=nesterov)
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
