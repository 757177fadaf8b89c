"""The numbers the project measures and applies, each against an independent computation.

* `StepGradientRecorder`: several unequal steps per epoch, replayed by hand with a tape
  and plain SGD, so a mean is told from a sum, a first, a last or a maximum.
* `make_optimizer`: every option in every mode, against NumPy's update rules and a
  learning rate computed by hand at each step.
* `check_config`: every documented range, at its edges and one step either side.
"""

from __future__ import annotations

import copy
import math
from itertools import product

import keras
import numpy as np
import pytest
import specs
import tensorflow as tf
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from resnet_exp.config.schema import ConfigError, check_config, register_configs
from resnet_exp.recording.gradients import StepGradientRecorder

# ---------------------------------------------------------------------------------------
# 5. The in-step gradient recorder: means over an epoch's steps, replayed by hand.
# ---------------------------------------------------------------------------------------

LR = 0.5  # large enough that each update moves the weight norms well beyond the tolerance
KERNELS = ["hidden_a", "hidden_b", "classifier"]


def small_net() -> keras.Model:
    """Three kernels and no batch norm or dropout, so a hand replay is exact."""
    inputs = keras.Input((5,))
    x = keras.layers.Dense(6, activation="tanh", name="hidden_a")(inputs)
    x = keras.layers.Dense(4, activation="tanh", name="hidden_b")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="small_net")


def scaled_batches(seed: int, sizes: list[int], scales: list[float]):
    """Inputs whose consecutive batches (of `sizes`) have very different scales."""
    rng = np.random.default_rng(seed)
    x = np.concatenate(
        [s * rng.normal(size=(n, 5)) for n, s in zip(sizes, scales, strict=True)]
    ).astype("float32")
    y = rng.integers(0, 3, size=sum(sizes))
    return x, y


def kernel_vars(model: keras.Model) -> list:
    return [v for v in model.trainable_variables if v.path.endswith("/kernel")]


def replay_epoch(model: keras.Model, x, y, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """One epoch of plain SGD by hand, in order: each step's kernel gradient norms and the
    kernel norms after it, both (steps, kernels)."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy()  # mean over the batch, as in fit
    step_norms, after = [], []
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        variables = model.trainable_variables
        grads = tape.gradient(loss, variables)
        step_norms.append(
            [
                np.linalg.norm(g.numpy().astype(np.float64))
                for v, g in zip(variables, grads, strict=True)
                if v.path.endswith("/kernel")
            ]
        )
        for v, g in zip(variables, grads, strict=True):
            v.assign(v.numpy() - np.float32(LR) * g.numpy())
        after.append(weight_norms(model))
    return np.array(step_norms), np.array(after)


def weight_norms(model: keras.Model) -> np.ndarray:
    return np.array([np.linalg.norm(k.numpy().astype(np.float64)) for k in kernel_vars(model)])


def assert_aggregates_differ(step_norms: np.ndarray, others: list[np.ndarray]) -> None:
    """Guard: the mean is far from every other plausible summary of this epoch's steps."""
    mean = step_norms.mean(axis=0)
    n = len(step_norms)
    wrong = {
        "sum": step_norms.sum(axis=0),
        "first": step_norms[0],
        "last": step_norms[-1],
        "max": step_norms.max(axis=0),
        "min": step_norms.min(axis=0),
        "sum/(n-1)": step_norms.sum(axis=0) / max(n - 1, 1),
        "sum/(n+1)": step_norms.sum(axis=0) / (n + 1),
        "mean without the first": step_norms[1:].mean(axis=0),
        "mean without the last": step_norms[:-1].mean(axis=0),
    }
    for i, other in enumerate(others):  # e.g. other epochs' steps counted in
        wrong[f"mean with epoch {i}"] = np.concatenate([other, step_norms]).mean(axis=0)
        wrong[f"sum with epoch {i} / n"] = (other.sum(axis=0) + step_norms.sum(axis=0)) / n
    for name, value in wrong.items():
        assert np.max(np.abs(value / mean - 1)) > 1e-2, f"the mean and the {name} are too close"


def recorded(recorder: StepGradientRecorder, step: int) -> tuple[np.ndarray, np.ndarray]:
    frame = recorder.profile_frame()
    rows = frame[frame["epoch"] == step].sort_values("layer_index")
    assert list(rows["layer_index"]) == list(range(len(KERNELS))), f"step {step}"
    assert list(rows["layer_name"]) == KERNELS, f"step {step}"
    return rows["grad_norm"].to_numpy(), rows["weight_norm"].to_numpy()


def assert_step(recorder: StepGradientRecorder, step: int, grads, weights) -> None:
    got_grads, got_weights = recorded(recorder, step)
    np.testing.assert_allclose(got_grads, grads, rtol=2e-5, err_msg=f"grad_norm, step {step}")
    np.testing.assert_allclose(got_weights, weights, rtol=2e-5, err_msg=f"weight_norm, step {step}")
    summary = recorder.history[step]
    expected = {
        "grad_first_norm": grads[0],
        "grad_last_norm": grads[-1],
        "grad_first_rel": grads[0] / weights[0],
        "grad_last_rel": grads[-1] / weights[-1],
        "grad_first_last_ratio": grads[0] / grads[-1],
    }
    assert set(summary) == set(expected), f"step {step}"
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value, rel=4e-5), f"{key}, step {step}"


@pytest.fixture(scope="module")
def recorded_and_replayed():
    """Two fits with the recorder (3 steps per epoch, then 2, resumed at epoch 2), and the
    same training replayed by hand on a copy with the same initial weights."""
    first_sizes, second_sizes = [4, 4, 2], [4, 2]
    x1, y1 = scaled_batches(1, first_sizes, [1.0, 4.0, 0.25])
    x2, y2 = scaled_batches(2, second_sizes, [3.0, 0.5])

    keras.utils.set_random_seed(5)
    model = small_net()
    replica = small_net()
    replica.set_weights(model.get_weights())

    # by hand: step 0 is the first step's gradient on the initial weights
    replay = {"weights": {0: weight_norms(replica)}, "steps": {}, "after_each_step": {}}
    for epoch, (x, y) in ((1, (x1, y1)), (2, (x1, y1)), (3, (x2, y2)), (4, (x2, y2))):
        steps, after = replay_epoch(replica, x, y, batch_size=4)
        replay["steps"][epoch], replay["after_each_step"][epoch] = steps, after
        replay["weights"][epoch] = weight_norms(replica)

    model.compile(optimizer=keras.optimizers.SGD(LR), loss="sparse_categorical_crossentropy")
    recorder = StepGradientRecorder()
    first = model.fit(
        x1, y1, batch_size=4, epochs=2, shuffle=False, callbacks=[recorder], verbose=0
    )
    after_first = {s: dict(m) for s, m in recorder.history.items()}
    frame_after_first = recorder.profile_frame()
    second = model.fit(
        x2,
        y2,
        batch_size=4,
        epochs=4,
        initial_epoch=2,
        shuffle=False,
        callbacks=[recorder],
        verbose=0,
    )
    return {
        "model": model,
        "replica": replica,
        "recorder": recorder,
        "replay": replay,
        "logs": (first.history, second.history),
        "after_first": (after_first, frame_after_first),
    }


def test_the_replay_can_tell_a_mean_from_other_summaries(recorded_and_replayed):
    """Guard on the test itself: unequal steps, and weights that move at every step."""
    steps, weights = (
        recorded_and_replayed["replay"]["steps"],
        recorded_and_replayed["replay"]["weights"],
    )
    assert [len(steps[e]) for e in (1, 2, 3, 4)] == [3, 3, 2, 2]
    for epoch in (1, 2, 3, 4):
        others = [steps[e] for e in steps if e < epoch]
        assert_aggregates_differ(steps[epoch], others)
    # weight norms read a step early or late are told apart (the tolerance is 2e-5)
    after_each_step = recorded_and_replayed["replay"]["after_each_step"]
    for epoch in (1, 2, 3, 4):
        before = [weights[epoch - 1], *after_each_step[epoch][:-1]]
        assert np.allclose(after_each_step[epoch][-1], weights[epoch], rtol=0, atol=0)
        for other in before:
            assert np.max(np.abs(other / weights[epoch] - 1)) > 2e-4, epoch
    # step 0 (the first step) is none of epoch 1's mean, its last step or its maximum
    first_step = steps[1][0]
    for other in (steps[1].mean(axis=0), steps[1][-1], steps[1][1]):
        assert np.max(np.abs(other / first_step - 1)) > 1e-2


def test_the_model_trained_exactly_as_replayed(recorded_and_replayed):
    model, replica = recorded_and_replayed["model"], recorded_and_replayed["replica"]
    for got, expected in zip(model.get_weights(), replica.get_weights(), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_step_zero_is_the_first_step_on_the_initial_weights(recorded_and_replayed):
    replay, recorder = recorded_and_replayed["replay"], recorded_and_replayed["recorder"]
    assert_step(recorder, 0, replay["steps"][1][0], replay["weights"][0])
    assert "probe_loss" not in recorder.history[0]


@pytest.mark.parametrize("epoch", [1, 2])
def test_each_epoch_is_the_mean_of_its_three_steps_with_the_weights_at_its_end(
    recorded_and_replayed, epoch
):
    replay, recorder = recorded_and_replayed["replay"], recorded_and_replayed["recorder"]
    assert_step(recorder, epoch, replay["steps"][epoch].mean(axis=0), replay["weights"][epoch])


@pytest.mark.parametrize("epoch", [3, 4])
def test_a_resumed_fit_continues_with_the_mean_of_its_own_steps(recorded_and_replayed, epoch):
    """initial_epoch=2: epochs 3 and 4 of two steps each, on other data, on the trained model."""
    replay, recorder = recorded_and_replayed["replay"], recorded_and_replayed["recorder"]
    assert_step(recorder, epoch, replay["steps"][epoch].mean(axis=0), replay["weights"][epoch])


def test_a_resumed_fit_keeps_the_earlier_steps(recorded_and_replayed):
    recorder = recorded_and_replayed["recorder"]
    history_before, frame_before = recorded_and_replayed["after_first"]
    assert sorted(history_before) == [0, 1, 2]
    assert sorted(recorder.history) == [0, 1, 2, 3, 4]
    for step in (0, 1, 2):
        assert recorder.history[step] == history_before[step], f"step {step}"
    frame = recorder.profile_frame()
    earlier = frame[frame["epoch"] <= 2].reset_index(drop=True)
    assert earlier.equals(frame_before.reset_index(drop=True))
    assert sorted(frame["epoch"].unique()) == [0, 1, 2, 3, 4]
    assert len(frame) == 5 * len(KERNELS)


def test_each_epochs_logs_carry_that_epochs_summary(recorded_and_replayed):
    recorder = recorded_and_replayed["recorder"]
    first, second = recorded_and_replayed["logs"]
    for logs, steps in ((first, (1, 2)), (second, (3, 4))):
        for key in ("grad_first_norm", "grad_last_norm", "grad_first_last_ratio"):
            assert logs[key] == pytest.approx([recorder.history[s][key] for s in steps]), key


# ---------------------------------------------------------------------------------------
# 6. make_optimizer: every option in every mode, against the update rules in NumPy.
# ---------------------------------------------------------------------------------------

OPT_LR, GAMMA, TOTAL, NUM_STEPS = 0.2, 0.3, 7, 9
WARMUP_LR = 0.02
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-7  # Keras's AdamW defaults

# name: the schedule's fields (specs.optimizer); TOTAL = 7 steps of training.
SCHEDULES = {
    "constant": {"schedule": "constant"},
    # milestones 0.4 and 0.8 of 7 steps: iterations round(2.8) = 3 and round(5.6) = 6
    "step_milestones": {"schedule": "step", "milestones": [0.4, 0.8]},
    # milestone_steps replace the fractions (which would give 3 and 6)
    "step_milestone_steps": {
        "schedule": "step",
        "milestones": [0.4, 0.8],
        "milestone_steps": [2, 5],
    },
    "cosine": {"schedule": "cosine"},
    "warmup_constant": {"schedule": "constant", "warmup_steps": 2, "warmup_lr": WARMUP_LR},
    "warmup_step": {
        "schedule": "step",
        "milestones": [0.4, 0.8],
        "warmup_steps": 2,
        "warmup_lr": WARMUP_LR,
    },
}


def rate_by_hand(name: str, step: int) -> float:
    """The rate of (0-based) iteration `step`: Keras's piecewise-constant convention, the
    rate changes after the boundary iteration (step > boundary)."""
    options = SCHEDULES[name]
    if step < options.get("warmup_steps", 0):
        return WARMUP_LR
    if options["schedule"] == "constant":
        return OPT_LR
    if options["schedule"] == "cosine":
        return OPT_LR * 0.5 * (1 + math.cos(math.pi * min(step, TOTAL) / TOTAL))
    boundaries = options.get("milestone_steps") or [3, 6]  # see SCHEDULES
    return OPT_LR * GAMMA ** sum(step > b for b in boundaries)


def gradients_and_start() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    return rng.normal(size=(NUM_STEPS, 4)), rng.normal(size=4) + np.array([1.0, -1.0, 2.0, 0.5])


def sgd_by_hand(mode, momentum, nesterov, weight_decay, schedule) -> np.ndarray:
    grads, w = gradients_and_start()
    v = np.zeros_like(w)
    path = []
    for t, g in enumerate(grads):
        lr = rate_by_hand(schedule, t)
        if mode == "l2":  # wd * w joins the gradient, before the momentum
            g = g + weight_decay * w  # noqa: PLW2901
        else:  # Keras's weight_decay: w -= lr * wd * w, before the update
            w = w - lr * weight_decay * w
        if momentum == 0:
            w = w - lr * g
        else:
            v = momentum * v - lr * g
            w = w + (momentum * v - lr * g if nesterov else v)
        path.append(w)
    return np.array(path)


def adamw_by_hand(weight_decay, schedule) -> np.ndarray:
    grads, w = gradients_and_start()
    m, s = np.zeros_like(w), np.zeros_like(w)
    path = []
    for t, g in enumerate(grads):
        lr = rate_by_hand(schedule, t)
        w = w - lr * weight_decay * w
        m = m + (g - m) * (1 - ADAM_B1)
        s = s + (g * g - s) * (1 - ADAM_B2)
        alpha = lr * math.sqrt(1 - ADAM_B2 ** (t + 1)) / (1 - ADAM_B1 ** (t + 1))
        w = w - alpha * m / (np.sqrt(s) + ADAM_EPS)
        path.append(w)
    return np.array(path)


def applied(optimizer) -> np.ndarray:
    grads, start = gradients_and_start()
    variable = keras.Variable(start.astype("float32"), name="w")
    path = []
    for g in grads:
        optimizer.apply([keras.ops.convert_to_tensor(g.astype("float32"))], [variable])
        path.append(keras.ops.convert_to_numpy(variable).astype(np.float64))
    return np.array(path)


SGD_CASES = [
    pytest.param(mode, m, nest, wd, sched, id=f"sgd-{mode}-m{m}-nest{nest}-wd{wd}-{sched}")
    for mode, (m, nest), wd, sched in product(
        ["decoupled", "l2"],
        [(0.0, False), (0.0, True), (0.5, False), (0.5, True)],
        [0.0, 0.3],
        list(SCHEDULES),
    )
]


@pytest.mark.parametrize(("mode", "momentum", "nesterov", "weight_decay", "schedule"), SGD_CASES)
def test_sgd_applies_every_option(mode, momentum, nesterov, weight_decay, schedule):
    optimizer = specs.optimizer(
        "sgd",
        TOTAL,
        lr=OPT_LR,
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=weight_decay,
        gamma=GAMMA,
        weight_decay_mode=mode,
        **SCHEDULES[schedule],
    )
    expected = sgd_by_hand(mode, momentum, nesterov, weight_decay, schedule)
    np.testing.assert_allclose(applied(optimizer), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
def test_adam_applies_every_option(weight_decay, schedule):
    optimizer = specs.optimizer(
        "adam",
        TOTAL,
        lr=OPT_LR,
        weight_decay=weight_decay,
        gamma=GAMMA,
        **SCHEDULES[schedule],
    )
    expected = adamw_by_hand(weight_decay, schedule)
    # float32 Adam divides by sqrt(v) + 1e-7: a few 1e-6 of rounding; any wrong option is > 1e-3
    np.testing.assert_allclose(applied(optimizer), expected, rtol=1e-5, atol=2e-5)


def test_the_references_tell_every_option_apart():
    """Guard on the test itself: changing any one option changes the hand trajectory."""
    base = ("decoupled", 0.5, False, 0.3, "step_milestones")
    reference = sgd_by_hand(*base)
    variants = [
        ("l2", 0.5, False, 0.3, "step_milestones"),
        ("decoupled", 0.0, False, 0.3, "step_milestones"),
        ("decoupled", 0.9, False, 0.3, "step_milestones"),
        ("decoupled", 0.5, True, 0.3, "step_milestones"),
        ("decoupled", 0.5, False, 0.0, "step_milestones"),
        *[("decoupled", 0.5, False, 0.3, s) for s in SCHEDULES if s != "step_milestones"],
    ]
    for variant in variants:
        assert np.max(np.abs(sgd_by_hand(*variant) - reference)) > 1e-3, variant
    adam = adamw_by_hand(0.3, "step_milestones")
    for variant in [
        (0.0, "step_milestones"),
        *[(0.3, s) for s in SCHEDULES if s != "step_milestones"],
    ]:
        assert np.max(np.abs(adamw_by_hand(*variant) - adam)) > 1e-3, variant
    # the schedules differ at the steps the hand rates say
    assert [rate_by_hand("step_milestones", t) for t in range(8)] == pytest.approx(
        [0.2, 0.2, 0.2, 0.2, 0.06, 0.06, 0.06, 0.018]
    )
    assert [rate_by_hand("warmup_step", t) for t in range(5)] == pytest.approx(
        [0.02, 0.02, 0.2, 0.2, 0.06]
    )


# ---------------------------------------------------------------------------------------
# 7. check_config at the edges of every documented range.
# ---------------------------------------------------------------------------------------

OK = None  # accepted; otherwise the key the one-line error names

EDGES: list[tuple[str, str | None]] = [
    # seed: numpy's and Keras's unsigned 32-bit range
    ("seed=0", OK),
    ("seed=1", OK),
    ("seed=4294967295", OK),
    ("seed=-1", "seed"),
    ("seed=4294967296", "seed"),
    # data.val_fraction in [0, 1)
    ("data.val_fraction=0", OK),
    ("data.val_fraction=0.0", OK),
    ("data.val_fraction=0.999", OK),
    ("data.val_fraction=1", "data.val_fraction"),
    ("data.val_fraction=1.0", "data.val_fraction"),
    ("data.val_fraction=-0.001", "data.val_fraction"),
    # optim.momentum in [0, 1)
    ("optim.momentum=0", OK),
    ("optim.momentum=0.999", OK),
    ("optim.momentum=1", "optim.momentum"),
    ("optim.momentum=1.0", "optim.momentum"),
    ("optim.momentum=-0.001", "optim.momentum"),
    # lesion.max_examples >= 0 (0: all)
    ("lesion.max_examples=0", OK),
    ("lesion.max_examples=1", OK),
    ("lesion.max_examples=-1", "lesion.max_examples"),
    # lesion.draws > 0
    ("lesion.draws=1", OK),
    ("lesion.draws=0", "lesion.draws"),
    ("lesion.draws=-1", "lesion.draws"),
    # lesion.k: every entry > 0
    ("lesion.k=[1]", OK),
    ("lesion.k=[1,2,4,8]", OK),
    ("lesion.k=[0]", "lesion.k"),
    ("lesion.k=[1,0]", "lesion.k"),
    ("lesion.k=[2,-1]", "lesion.k"),
    # trainer.threads >= 0 (0: all cores)
    ("trainer.threads=0", OK),
    ("trainer.threads=1", OK),
    ("trainer.threads=-1", "trainer.threads"),
    # trainer.steps > 0, or null (use epochs)
    ("trainer.steps=null", OK),
    ("trainer.steps=1", OK),
    ("trainer.steps=0", "trainer.steps"),
    ("trainer.steps=-1", "trainer.steps"),
    # optim.schedule.milestones: increasing fractions in (0, 1)
    ("optim.schedule.milestones=[0.5]", OK),
    ("optim.schedule.milestones=[0.001,0.999]", OK),
    ("optim.schedule.milestones=[]", OK),
    ("optim.schedule.milestones=[0]", "optim.schedule.milestones"),
    ("optim.schedule.milestones=[0.0,0.5]", "optim.schedule.milestones"),
    ("optim.schedule.milestones=[1]", "optim.schedule.milestones"),
    ("optim.schedule.milestones=[0.5,1.0]", "optim.schedule.milestones"),
    ("optim.schedule.milestones=[-0.1]", "optim.schedule.milestones"),
    ("optim.schedule.milestones=[1.5]", "optim.schedule.milestones"),
    ("optim.schedule.milestones=[0.75,0.5]", "optim.schedule.milestones"),
    # optim.schedule.milestone_steps: increasing positive iterations, below trainer.steps
    ("optim.schedule.milestone_steps=null", OK),
    ("optim.schedule.milestone_steps=[1]", OK),
    ("optim.schedule.milestone_steps=[1,2]", OK),
    ("optim.schedule.milestone_steps=[0]", "optim.schedule.milestone_steps"),
    ("optim.schedule.milestone_steps=[-1]", "optim.schedule.milestone_steps"),
    ("optim.schedule.milestone_steps=[0,2]", "optim.schedule.milestone_steps"),
    ("optim.schedule.milestone_steps=[3,2]", "optim.schedule.milestone_steps"),
    ("trainer.steps=5 optim.schedule.milestone_steps=[4]", OK),
    ("trainer.steps=5 optim.schedule.milestone_steps=[1,4]", OK),
    ("trainer.steps=5 optim.schedule.milestone_steps=[5]", "optim.schedule.milestone_steps"),
    ("trainer.steps=5 optim.schedule.milestone_steps=[1,6]", "optim.schedule.milestone_steps"),
    # optim.schedule.warmup_steps >= 0, and warmup_lr > 0 when there is a warm-up
    ("optim.schedule.warmup_steps=0", OK),
    ("optim.schedule.warmup_steps=1", OK),
    ("optim.schedule.warmup_steps=-1", "optim.schedule.warmup_steps"),
    ("optim.schedule.warmup_steps=1 optim.schedule.warmup_lr=1e-12", OK),
    ("optim.schedule.warmup_steps=1 optim.schedule.warmup_lr=0", "optim.schedule.warmup_lr"),
    ("optim.schedule.warmup_steps=1 optim.schedule.warmup_lr=-0.01", "optim.schedule.warmup_lr"),
    # optim.schedule.gamma in (0, 1]: the rate never grows nor turns negative
    ("optim.schedule.gamma=1", OK),
    ("optim.schedule.gamma=1e-6", OK),
    ("optim.schedule.gamma=0", "optim.schedule.gamma"),
    ("optim.schedule.gamma=-1", "optim.schedule.gamma"),
    ("optim.schedule.gamma=1.01", "optim.schedule.gamma"),
    # milestones strictly increasing: an equal pair is one drop counted twice
    ("optim.schedule.milestones=[0.5,0.5]", "optim.schedule.milestones"),
    ("optim.schedule.milestone_steps=[2,2]", "optim.schedule.milestone_steps"),
    # warm-up shorter than the run, when the run is counted in iterations
    ("trainer.steps=5 optim.schedule.warmup_steps=4", OK),
    ("trainer.steps=5 optim.schedule.warmup_steps=5", "optim.schedule.warmup_steps"),
    # data.num_classes >= 2
    ("data=synthetic data.num_classes=2", OK),
    ("data=synthetic data.num_classes=1", "data.num_classes"),
    ("data=synthetic data.num_classes=0", "data.num_classes"),
    # trainer.shuffle_buffer >= 0 (0: the whole set)
    ("trainer.shuffle_buffer=0", OK),
    ("trainer.shuffle_buffer=1", OK),
    ("trainer.shuffle_buffer=-1", "trainer.shuffle_buffer"),
    # lesions need at least one k
    ("lesion.enabled=true lesion.k=[]", "lesion.k"),
    ("lesion.enabled=false lesion.k=[]", OK),
    # optim.weight_decay >= 0; l2 mode only with sgd
    ("optim.weight_decay=0", OK),
    ("optim.weight_decay=1e-12", OK),
    ("optim.weight_decay=-1e-12", "optim.weight_decay"),
    ("optim.weight_decay=-0.1", "optim.weight_decay"),
    ("optim=sgd optim.weight_decay_mode=l2", OK),
    ("optim=sgd optim.weight_decay_mode=decoupled", OK),
    ("optim=adam optim.weight_decay_mode=decoupled", OK),
    ("optim=adam optim.weight_decay_mode=l2", "optim.weight_decay_mode"),
    # data.input_shape: [features] (mlp only) or [height, width, channels], all > 0
    ("data=synthetic data.input_shape=[1,1,1]", OK),
    ("data=synthetic data.input_shape=[8,8,0]", "data.input_shape"),
    ("data=synthetic data.input_shape=[0,8,1]", "data.input_shape"),
    ("data=synthetic data.input_shape=[8,8]", "data.input_shape"),
    ("data=synthetic data.input_shape=[8,8,1,1]", "data.input_shape"),
    ("data=synthetic data.input_shape=[]", "data.input_shape"),
    ("data=synthetic data.input_shape=[64]", "data.input_shape"),  # resnet_cifar
    ("model=mlp data=synthetic data.input_shape=[1]", OK),
    ("model=mlp data=synthetic data.input_shape=[0]", "data.input_shape"),
    ("model=mlp data=synthetic data.input_shape=[-1]", "data.input_shape"),
    # depth rules at their smallest depths
    ("model.depth=8", OK),
    ("model.depth=14", OK),
    ("model.depth=2", "model.depth"),
    ("model.depth=7", "model.depth"),
    ("model.depth=9", "model.depth"),
    ("model=mlp model.depth=4", OK),
    ("model=mlp model.depth=6", OK),
    ("model=mlp model.depth=2", "model.depth"),
    ("model=mlp model.depth=3", "model.depth"),
    ("model=mlp model.depth=5", "model.depth"),
    ("model=resnet_basic model.depth=10", OK),
    ("model=resnet_basic model.depth=26", OK),
    ("model=resnet_basic model.depth=2", "model.depth"),
    ("model=resnet_basic model.depth=12", "model.depth"),
    ("model=resnet_basic model.depth=10 model.blocks_per_stage=[1,1,1,1]", OK),
    ("model=resnet_basic model.depth=8 model.blocks_per_stage=[0,1,1,1]", "model.depth"),
]

# Every count and size that must be positive: 0 and -1 refused, 1 (the smallest) accepted.
POSITIVE = [
    "trainer.epochs",
    "trainer.batch_size",
    "model.width",
    "model.base_filters",
    "gradients.probe_size",
    "data.num_samples",
]
for key in POSITIVE:
    EDGES += [(f"data=synthetic {key}=1", OK)]
    EDGES += [(f"data=synthetic {key}={v}", key) for v in (0, -1)]
EDGES += [
    ("optim.lr=1e-12", OK),
    ("optim.lr=0", "optim.lr"),
    ("optim.lr=0.0", "optim.lr"),
    ("optim.lr=-0.1", "optim.lr"),
    ("optim=adam optim.lr=0", "optim.lr"),
]


@pytest.fixture(scope="module")
def composed():
    """`composed(*overrides)`: the project's config as Hydra composes it with these overrides.

    Hydra composes each group selection (`model=mlp`, ...) once; the value overrides are
    parsed by Hydra's own override parser and set on a copy of that typed config, so the
    schema's types are enforced as in a composition, at a fraction of its cost.
    """
    from conftest import ROOT
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    register_configs()
    parser = OverridesParser.create()
    bases: dict[tuple[str, ...], object] = {}

    def make(*overrides: str):
        groups = tuple(o for o in overrides if "." not in o.split("=")[0])
        if groups not in bases:
            GlobalHydra.instance().clear()
            with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
                bases[groups] = compose("config", overrides=list(groups))
            GlobalHydra.instance().clear()
        cfg = copy.deepcopy(bases[groups])
        for override in parser.parse_overrides([o for o in overrides if o not in groups]):
            OmegaConf.update(cfg, override.key_or_group, override.value(), merge=False)
        return cfg

    return make


def test_the_fast_composition_is_hydras(composed, make_cfg):
    """Guard on the fixture: the same config as a full Hydra composition."""
    overrides = (
        "model=mlp",
        "data=synthetic",
        "model.depth=4",
        "data.input_shape=[1]",
        "optim.lr=1e-12",
        "trainer.steps=null",
        "optim.schedule.milestones=[0.001,0.999]",
        "seed=4294967295",
    )
    fast = composed(*overrides)
    assert fast == make_cfg(*overrides)
    assert fast.optim.lr == 1e-12 and fast.trainer.steps is None


@pytest.mark.parametrize(("overrides", "refused_key"), EDGES, ids=[e[0] for e in EDGES])
def test_range_edges(composed, overrides, refused_key):
    cfg = composed(*overrides.split())
    if refused_key is None:
        check_config(cfg)
        return
    with pytest.raises(ConfigError) as caught:
        check_config(cfg)
    message = str(caught.value)
    assert message.startswith(f"{refused_key}="), message
    assert "\n" not in message
