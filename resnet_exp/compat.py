"""The only place that touches Keras's or MLflow's private parts, each for a measured saving.

Every item says why it is here, what it saves and what happens when the library
changes it; `tests/test_compat.py` checks each one against the installed version
and fails loudly (not silently slower or wrong) when the private thing has moved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

# ---------------------------------------------------------------- Keras


def keras_untouched() -> bool:
    """True in a process that has created no Keras object yet.

    Why: `keras.backend.clear_session()` resets a sequential sweep's state between
    jobs, and its `gc.collect()` costs about 0.3 s; a fresh process (every job of a
    parallel sweep) has nothing to clear. Keras keeps a name counter per process in
    its private global state, set by the first layer, model or variable; it has no
    public "anything created yet?" call. Saves: part of the start-up gap that went
    from 5.52 to 5.18 s (process start to epoch 1, scripts/dev/bench.py --parts start).
    If Keras moves it, this returns False and the session is cleared: slower, never
    wrong.
    """
    try:
        from keras.src.backend.common import global_state
    except ImportError:  # another Keras layout
        return False
    return global_state.get_global_attribute("object_name_uids") is None


def symbolic_build(model: keras.Model, data_batch: tuple[Any, Any]) -> bool:
    """Build the optimiser's slots and the compiled loss and metrics before `fit`.

    Why: Keras creates them inside the first traced train step, and a `tf.function`
    that creates variables is traced twice, so the first epoch pays its trace twice.
    Keras's own `Model._symbolic_build` (what it calls under a distribution
    strategy) creates the same variables up front. Saves: the first epoch of a
    ResNet-20 on digits took 8.0-10.1 s without it and 5.7-7.8 s with it (two loaded
    cores). Returns False, having built nothing, when Keras has no such method.
    """
    build = getattr(model, "_symbolic_build", None)
    if build is None:
        return False
    build(data_batch=data_batch)
    return True


def hook_optimizer_apply(model: keras.Model, wrap: Callable[[Callable], Callable]) -> Any:
    """Route every gradient the train step hands the optimiser through `wrap(apply)`.

    Why: Keras has no public per-step gradient hook. The in-step gradient recorder
    (`recording.gradients.StepGradientRecorder`) wraps the optimiser's `apply` for
    the duration of a fit and re-makes the train function so its next trace
    includes the wrapper; `unhook_optimizer_apply` undoes both. Saves: recording
    every epoch's first/last-layer gradients costs 1.000-1.003x a run's duration
    this way (8 repeats, scripts/dev/bench.py --parts recording) against 1.07x for a
    second, probe graph. Returns the optimiser that was hooked.
    """
    optimizer = model.optimizer
    optimizer.apply = wrap(optimizer.apply)  # an instance attribute shadows the method
    model.make_train_function(force=True)
    return optimizer


def unhook_optimizer_apply(model: keras.Model, optimizer: Any) -> None:
    """Undo `hook_optimizer_apply`: the class's own `apply`, a train function without it."""
    if "apply" in vars(optimizer):
        del optimizer.apply
    model.make_train_function(force=True)


# ---------------------------------------------------------------- MLflow (analysis)
