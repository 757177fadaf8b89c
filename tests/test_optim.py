"""Optimisers and schedules: the paper's settings are what the optimiser actually applies."""

from __future__ import annotations

import keras
import pytest
import specs

from resnet_exp.training.callbacks import EpochTimer
from resnet_exp.training.optim import current_learning_rate


def _at(rate, steps):
    return [float(keras.ops.convert_to_numpy(rate(step))) for step in steps]


def test_step_schedule_divides_by_gamma_at_each_milestone_fraction():
    # He et al. 2016: lr 0.1, divided by 10 at 50% and 75% of training.
    rate = specs.rate("step", 0.1, 100, milestones=[0.5, 0.75], gamma=0.1)
    assert _at(rate, [0, 49, 60, 74, 80, 99]) == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rel=1e-6
    )


def test_cosine_schedule_falls_from_lr_to_zero_over_training_and_constant_stays():
    rate = specs.rate("cosine", 0.1, 100)
    assert _at(rate, [0, 50, 100]) == pytest.approx([0.1, 0.05, 0.0], abs=1e-6)
    assert specs.rate("constant", 0.1, 100, milestones=[0.5]) == 0.1
    with pytest.raises(ValueError, match="schedule"):
        specs.rate("linear", 0.1, 100)


def test_optimisers_get_the_configured_settings():
    sgd = specs.optimizer("sgd", 10, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    assert isinstance(sgd, keras.optimizers.SGD)
    assert (sgd.momentum, sgd.nesterov, sgd.weight_decay) == (0.9, True, pytest.approx(1e-4))
    assert current_learning_rate(sgd) == pytest.approx(0.1)
    adam = specs.optimizer("adam", 10, lr=0.001, weight_decay=0.01)
    assert isinstance(adam, keras.optimizers.AdamW)
    assert adam.weight_decay == pytest.approx(0.01)
    with pytest.raises(ValueError, match="optimizer"):
        specs.optimizer("rmsprop", 10, lr=0.1)


def test_epoch_timer_logs_the_rate_at_the_epochs_start():
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    timer = EpochTimer()
    timer.set_model(model)
    timer.on_epoch_begin(0)
    model.optimizer.learning_rate = 0.01  # what a schedule does during the epoch
    logs: dict = {}
    timer.on_epoch_end(0, logs)
    assert logs["lr"] == pytest.approx(0.1)
    assert logs["epoch_time_s"] >= 0
