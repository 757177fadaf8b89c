"""Specs from keyword arguments: the library builds from config objects (one source of
defaults, the schema), tests name only the fields they vary."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import keras

from resnet_exp.config.schema import ModelConfig, OptimConfig, ScheduleConfig
from resnet_exp.models import build_model
from resnet_exp.training.optim import learning_rate, make_optimizer


def _split(kwargs: dict[str, Any], spec: type) -> tuple[dict[str, Any], dict[str, Any]]:
    names = {f.name for f in fields(spec)}
    inside = {k: v for k, v in kwargs.items() if k in names}
    return inside, {k: v for k, v in kwargs.items() if k not in names}


def build(name: str, depth: int, **kwargs: Any) -> keras.Model:
    """`ModelConfig` fields make the spec; the rest (input_shape, seed, ...) go to `build_model`."""
    spec, rest = _split(kwargs, ModelConfig)
    return build_model(ModelConfig(name=name, depth=depth, **spec), **rest)


def schedule(name: str, **kwargs: Any) -> ScheduleConfig:
    return ScheduleConfig(name=name, **kwargs)


def rate(name: str, lr: float, total_steps: int, **kwargs: Any) -> Any:
    """`learning_rate` of schedule `name` with these `ScheduleConfig` fields."""
    return learning_rate(schedule(name, **kwargs), lr, total_steps)


def optimizer(name: str, total_steps: int, *, schedule: str = "constant", **kwargs: Any):
    """`make_optimizer` of `OptimConfig` fields; `ScheduleConfig` fields make its schedule."""
    timing, rest = _split(kwargs, ScheduleConfig)
    return make_optimizer(
        OptimConfig(name=name, schedule=ScheduleConfig(name=schedule, **timing), **rest),
        total_steps,
    )
