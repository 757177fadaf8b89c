"""A fake depth study written to MLflow exactly as the training side writes one.

Tests, the load benchmark and figure development need a study without training
anything. The runs follow the project's MLflow contract (dotted params, per-epoch
metrics with step 0 = initialisation, the `diverged`/`run_kind`/`sweep_id` tags,
`grad_profile.csv` and `history.csv` artifacts), and their numbers have the
shape the real experiment is about: plain nets lose gradient at the first layer
and train worse as they deepen, residual nets do not. They are invented; nothing
here should be read as a result.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from resnet_exp import contract as c

EPOCH_METRICS = (
    c.TRAIN_LOSS,
    c.TRAIN_ACCURACY,
    c.VAL_LOSS,
    c.VAL_ACCURACY,
    c.LEARNING_RATE,
    c.EPOCH_TIME,
)
GRADIENT_METRICS = c.GRADIENT_METRICS
KERAS_KEYS = list(c.KERAS_RENAMES)  # history.csv's columns: Keras's names for the logged metrics


@dataclass
class FakeStudy:
    """What `log_fake_study` wrote, so tests can find it again."""

    experiment: str
    experiment_id: str
    parent_run_id: str | None
    run_ids: list[str] = field(default_factory=list)
    diverged_run_ids: list[str] = field(default_factory=list)
    failed_run_ids: list[str] = field(default_factory=list)


def layer_names(depth: int) -> list[str]:
    """Positional names of the `depth` weight layers of a CIFAR-style ResNet (6n+2)."""
    n = max(1, (depth - 2) // 6)
    names = ["conv1"]
    for stage in (1, 2, 3):
        for block in range(1, n + 1):
            names += [f"stage{stage}_block{block}_conv1", f"stage{stage}_block{block}_conv2"]
    names.append("fc")
    return names[:depth] if len(names) >= depth else names + ["fc"] * (depth - len(names))


def _params(
    model: str, depth: int, residual: bool, batch_norm: bool, seed: int, epochs: int, dataset: str
) -> dict[str, str]:
    """The flattened config, stringified the way MLflow stores params."""
    return {
        "model.name": model,
        "model.depth": str(depth),
        "model.residual": str(residual),
        "model.batch_norm": str(batch_norm),
        "model.activation": "relu",
        "model.kernel_initializer": "he_normal",
        "model.shortcut": "A",
        "model.width": "128",
        "model.blocks_per_stage": "None",
        "model.base_filters": "16",
        "data.name": dataset,
        "data.num_classes": "10",
        "data.val_fraction": "0.2",
        "optim.name": "sgd",
        "optim.lr": "0.1",
        "optim.momentum": "0.9",
        "optim.nesterov": "False",
        "optim.weight_decay": "0.0001",
        "optim.schedule.name": "step",
        "optim.schedule.milestones": "[0.5, 0.75]",
        "optim.schedule.gamma": "0.1",
        "trainer.epochs": str(epochs),
        "trainer.batch_size": "128",
        "trainer.deterministic": "False",
        "tracking.experiment": "unused",
        "gradients.enabled": "True",
        "gradients.probe_size": "128",
        "seed": str(seed),
    }


def _first_layer_factor(depth: int, residual: bool, batch_norm: bool) -> float:
    """First-layer / last-layer gradient norm at init: vanishing or exploding in plain nets."""
    if residual:
        return 1.3 + 0.01 * depth
    if batch_norm:
        return 1.1 ** (depth / 2)  # BN plain nets: gradients grow towards the input
    return 0.8 ** (depth / 2)  # no BN: gradients vanish towards the input


def _final_train_error(depth: int, residual: bool, batch_norm: bool) -> float:
    if residual:
        return max(0.01, 0.05 - 0.0004 * depth)
    return min(0.6, 0.03 + (0.004 if batch_norm else 0.012) * depth)


def _sharpness_scale(depth: int, residual: bool, batch_norm: bool) -> float:
    """How sharp the trained minimum is: plain nets sharpen with depth, residual nets do not."""
    if residual:
        return 1.0 + 0.002 * depth
    return 1.0 * 1.05**depth * (1.0 if batch_norm else 2.0)


def _curvature_log(
    rng: np.random.Generator,
    depth: int,
    residual: bool,
    batch_norm: bool,
    epochs: Sequence[int],
    ts: int,
) -> tuple[list[Metric], str]:
    """Hessian metrics at `epochs` (0: initialisation) and the matching curvature.csv."""
    metrics: list[Metric] = []
    rows = [",".join(c.CURVATURE_COLUMNS)]
    scale = _sharpness_scale(depth, residual, batch_norm)
    for epoch in epochs:
        top = (5.0 + 0.1 * depth if epoch == 0 else 10.0 * scale) * math.exp(rng.normal(0, 0.05))
        trace = 20 * top * math.exp(rng.normal(0, 0.05))
        values = {
            c.HESSIAN_TOP_EIG: top,
            c.HESSIAN_TOP_EIG_ITERATIONS: 12.0,
            c.HESSIAN_TRACE: trace,
            c.HESSIAN_TRACE_STDERR: 0.02 * trace,
            c.HESSIAN_BATCH_LOSS: 2.3 if epoch == 0 else 0.05,
            c.CURVATURE_TIME: 1.0,
        }
        metrics += [Metric(k, v, ts + epoch, epoch) for k, v in values.items()]
        mode = "training" if epoch == 0 else "inference"  # curvature.bn_mode=auto
        rows.append(
            f"{epoch},{mode},256,1000,{top:.6g},12,True,{trace:.6g},{0.02 * trace:.6g},"
            f"{values[c.HESSIAN_BATCH_LOSS]},1.0"
        )
    return metrics, "\n".join(rows) + "\n"


def _landscape_log(
    rng: np.random.Generator, depth: int, residual: bool, batch_norm: bool, epoch: int, ts: int
) -> tuple[list[Metric], str, str]:
    """Landscape metrics at `epoch`, landscape_1d.csv and landscape_2d.csv on a 9 x 9 grid:
    a bowl whose walls steepen with `_sharpness_scale`, rippled in deep plain nets."""
    grid = np.linspace(-1.0, 1.0, 9)
    scale = _sharpness_scale(depth, residual, batch_norm) * math.exp(rng.normal(0, 0.05))
    ripple = 0.0 if residual else 0.01 * depth

    def loss(a: float, b: float) -> float:
        return 0.01 + scale * (a * a + b * b) + ripple * (1 - math.cos(6 * a) * math.cos(6 * b))

    line = [",".join(c.LANDSCAPE_1D_COLUMNS)]
    line += [f"{a:g},{loss(a, 0.0):.6g},{max(0.1, 1 - loss(a, 0.0)):.4g}" for a in grid]
    plane = [",".join(c.LANDSCAPE_2D_COLUMNS)]
    plane += [f"{a:g},{b:g},{loss(a, b):.6g},0.5,," for a in grid for b in grid]
    values = {
        c.LANDSCAPE_SHARPNESS: (loss(-0.5, 0) + loss(0.5, 0)) / 2 - loss(0, 0),
        c.LANDSCAPE_NONCONVEXITY: 0.0 if residual else min(0.8, 0.01 * depth),
        c.LANDSCAPE_CENTRE_LOSS: loss(0.0, 0.0),
        c.LANDSCAPE_TIME: 2.0,
    }
    metrics = [Metric(k, v, ts + epoch, epoch) for k, v in values.items()]
    return metrics, "\n".join(line) + "\n", "\n".join(plane) + "\n"


def _chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def log_run(
    client: MlflowClient,
    experiment_id: str,
    *,
    model: str = "resnet_cifar",
    dataset: str = "digits",
    depth: int,
    residual: bool,
    batch_norm: bool = True,
    seed: int = 0,
    epochs: int = 8,
    parent_run_id: str | None = None,
    sweep_id: str | None = None,
    diverge_at: int | None = None,
    fail_at: int | None = None,
    status: str = "FINISHED",
    gradients: bool = True,
    profile: bool = True,
    history: bool = True,
    kind: str | None = None,
    curvature: bool = False,
    landscape: bool = False,
) -> str:
    """Log one training run following the contract; return its run id.

    `kind`: the `arch` tag (`skip@stage3_block1`, `residual-fixup`, ...) when it says more
    than `residual`; the numbers follow `residual`.

    `diverge_at` ends the run at that epoch with a NaN loss and the `diverged`
    tag; `fail_at` ends it there with status FAILED; `status="RUNNING"` leaves
    it open after `epochs` epochs. `curvature` / `landscape` add what
    `curvature.enabled` / `landscape.enabled` log (metrics and CSVs; plain nets'
    minima sharpen with depth, residual nets' do not).
    """
    rng = np.random.default_rng(
        zlib.crc32(f"{model}|{depth}|{residual}|{batch_norm}|{seed}|{kind or ''}".encode())
    )
    arch = kind or ("res" if residual else "plain")
    tags = {
        c.RUN_KIND: c.TRAIN,
        c.GIT_COMMIT: "0123456789abcdef0123456789abcdef01234567",
        c.CONFIG_HASH: f"{depth}{arch}{int(batch_norm)}s{seed}",
        c.OVERRIDES: f"model.depth={depth} model.residual={residual} seed={seed}",
    }
    if kind:
        tags[c.ARCH] = kind
    if sweep_id:
        tags[c.SWEEP_ID] = sweep_id
    if parent_run_id:
        tags[c.PARENT] = parent_run_id
    name = f"{model}-{depth}-{arch}-bn{int(batch_norm)}-s{seed}"
    run = client.create_run(experiment_id, tags=tags, run_name=name)
    run_id = run.info.run_id
    params = [
        Param(k, v)
        for k, v in _params(model, depth, residual, batch_norm, seed, epochs, dataset).items()
    ]

    last_epoch = epochs
    if diverge_at is not None:
        last_epoch = diverge_at
    if fail_at is not None:
        last_epoch = fail_at
    factor = _first_layer_factor(depth, residual, batch_norm)
    floor = _final_train_error(depth, residual, batch_norm)
    last0 = 0.4 * math.exp(rng.normal(0, 0.1))
    ts = int(time.time() * 1000)
    metrics: list[Metric] = []
    profile_rows: list[str] = [",".join(c.PROFILE_COLUMNS)]
    history_rows: list[str] = [",".join(["epoch", *KERAS_KEYS, "learning_rate"])]
    names = layer_names(depth)
    for epoch in range(0, last_epoch + 1):
        decay = math.exp(-1.5 * epoch / epochs)
        last = last0 * decay * math.exp(rng.normal(0, 0.05))
        first = last * factor * math.exp(rng.normal(0, 0.1))
        probe = 2.3 * (floor + (0.9 - floor) * math.exp(-epoch / (epochs / 4)))
        diverging = diverge_at is not None and epoch == diverge_at
        if gradients:
            values = {
                c.GRAD_FIRST: math.inf if diverging else first,
                c.GRAD_LAST: math.inf if diverging else last,
                c.GRAD_FIRST_REL: first / 3.0,
                c.GRAD_LAST_REL: last / 2.0,
                c.GRAD_RATIO: first / last,
                c.PROBE_LOSS: math.nan if diverging else probe,
            }
            metrics += [Metric(k, v, ts + epoch, epoch) for k, v in values.items()]
        if profile and gradients and (epoch in (0, epochs // 2, epochs) or epoch == last_epoch):
            for i, name in enumerate(names):
                frac = i / max(1, depth - 1)  # 0 at the first layer, 1 at the last
                norm = first * (last / first) ** frac * math.exp(rng.normal(0, 0.08))
                profile_rows.append(f"{epoch},{i},{name},{norm:.6g},{1 + 0.1 * i:.4g}")
        if epoch == 0:
            continue
        train_err = floor + (0.9 - floor) * math.exp(-epoch / (epochs / 4))
        train_err = min(0.9, max(0.0, train_err + rng.normal(0, 0.005)))
        val_err = min(0.9, train_err + 0.03 + rng.normal(0, 0.01))
        lr = 0.1 if epoch <= epochs // 2 else 0.01
        values = {
            c.TRAIN_LOSS: math.nan if diverging else 2.3 * train_err,
            c.TRAIN_ACCURACY: 0.1 if diverging else 1 - train_err,
            c.VAL_LOSS: math.nan if diverging else 2.3 * val_err + 0.05,
            c.VAL_ACCURACY: 0.1 if diverging else 1 - val_err,
            c.LEARNING_RATE: lr,
            c.EPOCH_TIME: 0.5 + 0.02 * depth,
        }
        metrics += [Metric(k, v, ts + epoch, epoch) for k, v in values.items()]
        keras_logs = [values[c.KERAS_RENAMES[k]] for k in KERAS_KEYS]
        history_rows.append(",".join(str(v) for v in [epoch - 1, *keras_logs, lr]))

    artifacts: dict[str, str] = {}
    if curvature:
        extra, artifacts[c.CURVATURE_ARTIFACT] = _curvature_log(
            rng, depth, residual, batch_norm, sorted({0, last_epoch}), ts
        )
        metrics += extra
    if landscape:
        extra, *tables = _landscape_log(rng, depth, residual, batch_norm, last_epoch, ts)
        metrics += extra
        artifacts.update(
            zip((c.LANDSCAPE_1D_ARTIFACT, c.LANDSCAPE_2D_ARTIFACT), tables, strict=True)
        )
    run_tags = [RunTag(c.DIVERGED, "true" if diverge_at is not None else "false")]
    if diverge_at is not None:
        run_tags.append(RunTag(c.DIVERGED_EPOCH, str(diverge_at)))
    # log_batch takes at most 1000 metrics, 100 params and 100 tags per call.
    client.log_batch(run_id, params=params[:100], tags=run_tags)
    for chunk in _chunks(metrics, 1000):
        client.log_batch(run_id, metrics=list(chunk))
    if profile and gradients:
        client.log_text(run_id, "\n".join(profile_rows) + "\n", c.PROFILE_ARTIFACT)
    if history:
        client.log_text(run_id, "\n".join(history_rows) + "\n", c.HISTORY_ARTIFACT)
    for name, text in artifacts.items():
        client.log_text(run_id, text, name)
    if status == "RUNNING" and fail_at is None:
        return run_id
    client.set_terminated(run_id, "FAILED" if fail_at is not None else status)
    return run_id


def log_fake_study(
    client: MlflowClient,
    experiment: str,
    *,
    depths: Sequence[int] = (8, 14, 20, 32),
    residual: Sequence[bool] = (False, True),
    batch_norm: Sequence[bool] = (True,),
    seeds: Sequence[int] = (0, 1),
    epochs: int = 8,
    model: str = "resnet_cifar",
    with_parent: bool = True,
    diverge: bool = True,
    fail: bool = True,
    gradients: bool = True,
    profiles: bool = True,
    artifact_location: str | None = None,
    curvature: bool = False,
    landscape: bool = False,
) -> FakeStudy:
    """Log a sweep (parent run plus one child per configuration and seed).

    With `diverge`, the deepest plain net without batch norm (or, when the study
    has none, the deepest plain net) diverges at epoch 3 for its last seed; with
    `fail`, the shallowest residual net's last seed fails at epoch 2. `curvature` and
    `landscape` are passed to every `log_run`.
    """
    exp = client.get_experiment_by_name(experiment)
    experiment_id = (
        exp.experiment_id
        if exp
        else client.create_experiment(experiment, artifact_location=artifact_location)
    )
    sweep_id = f"sweep-{experiment}"
    parent_id = None
    if with_parent:
        parent = client.create_run(
            experiment_id, tags={c.RUN_KIND: c.SWEEP, c.SWEEP_ID: sweep_id}, run_name="depth-sweep"
        )
        parent_id = parent.info.run_id
    study = FakeStudy(experiment, experiment_id, parent_id)
    diverging_bn = False if False in batch_norm else batch_norm[0]
    for bn in batch_norm:
        for res in residual:
            for depth in depths:
                for seed in seeds:
                    diverge_at = None
                    if (
                        diverge
                        and not res
                        and bn == diverging_bn
                        and depth == max(depths)
                        and seed == seeds[-1]
                    ):
                        diverge_at = min(3, epochs)
                    fail_at = None
                    if fail and res and depth == min(depths) and seed == seeds[-1]:
                        fail_at = min(2, epochs)
                    run_id = log_run(
                        client,
                        experiment_id,
                        model=model,
                        depth=depth,
                        residual=res,
                        batch_norm=bn,
                        seed=seed,
                        epochs=epochs,
                        parent_run_id=parent_id,
                        sweep_id=sweep_id if with_parent else None,
                        diverge_at=diverge_at,
                        fail_at=fail_at,
                        gradients=gradients,
                        profile=profiles,
                        curvature=curvature,
                        landscape=landscape,
                    )
                    study.run_ids.append(run_id)
                    if diverge_at is not None:
                        study.diverged_run_ids.append(run_id)
                    if fail_at is not None:
                        study.failed_run_ids.append(run_id)
    if parent_id:
        client.set_terminated(parent_id, "FINISHED")
    return study
