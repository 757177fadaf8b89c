"""The typed schema of the Hydra config, and the checks a type cannot express.

Structured configs make Hydra reject a wrong type or an unknown key while it
composes the config. `check_config` adds the rules that depend on several
values (a depth the family can build, a positive epoch count, ...). Nothing
here imports TensorFlow, so a bad config fails in well under a second.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from resnet_exp.config.depths import DepthError, blocks_with_skips, check_depth

# `${if_at_least:${model.depth},110,400,0}`: a value that depends on another one,
# e.g. He et al. 2016's warm-up, used for ResNet-110 only, in a sweep over depths.
OmegaConf.register_new_resolver(
    "if_at_least",
    lambda value, threshold, then, otherwise: then if value >= threshold else otherwise,
    replace=True,
)

# Overrides the sweeper (run/sweep.py) adds to every job: where a job logs and how many
# threads it may use, not what it computes.
INJECTED_OVERRIDES = (
    "tracking.parent_run_id=",
    "tracking.sweep_id=",
    "tracking.varying=",
    "trainer.threads=",
)


class ModelFamily(StrEnum):
    resnet_cifar = "resnet_cifar"
    resnet_basic = "resnet_basic"
    mlp = "mlp"
    vgg = "vgg"


class Activation(StrEnum):
    relu = "relu"
    tanh = "tanh"
    sigmoid = "sigmoid"


class Initializer(StrEnum):
    """The `keras.initializers` names that can start both a conv and a dense kernel.

    Kept here so that a typo fails before TensorFlow loads; a test checks the list
    against Keras (left out: `constant`, which needs a value, and `identity` and
    `stft`, which only fit some shapes).
    """

    glorot_normal = "glorot_normal"
    glorot_uniform = "glorot_uniform"
    he_normal = "he_normal"
    he_uniform = "he_uniform"
    lecun_normal = "lecun_normal"
    lecun_uniform = "lecun_uniform"
    ones = "ones"
    orthogonal = "orthogonal"
    random_normal = "random_normal"
    random_uniform = "random_uniform"
    truncated_normal = "truncated_normal"
    variance_scaling = "variance_scaling"
    zeros = "zeros"


class Shortcut(StrEnum):
    A = "A"  # identity, zero-padded channels: no parameters, plain and residual twins match
    B = "B"  # 1x1 projection where the shape changes


class ResidualInit(StrEnum):
    """How the residual branches start, for nets without batch norm (`model.residual_init`)."""

    standard = "standard"  # the kernel initializer everywhere
    skipinit = "skipinit"  # De & Smith 2020: each branch times a learnable scalar that starts at 0
    fixup = "fixup"  # Zhang, Dauphin & Ma 2019: scalar biases, a scale, rescaled and zero kernels


class DatasetName(StrEnum):
    digits = "digits"
    synthetic = "synthetic"
    cifar10 = "cifar10"
    cifar100 = "cifar100"
    mnist = "mnist"
    fashion_mnist = "fashion_mnist"


class LabelMode(StrEnum):
    fine = "fine"  # CIFAR-100's 100 classes
    coarse = "coarse"  # its 20 superclasses


class OptimizerName(StrEnum):
    sgd = "sgd"
    adam = "adam"


class WeightDecayMode(StrEnum):
    decoupled = "decoupled"  # Keras: w -= lr * wd * w, outside the momentum
    l2 = "l2"  # Caffe/Torch/He et al. 2016: wd * w added to the gradient (sgd only)


class GradientSource(StrEnum):
    step = "step"  # the training steps' own gradients, gathered in Keras's train step (~free)
    probe = "probe"  # a fixed probe batch, measured by a second graph (costs a trace per run)


class ScheduleName(StrEnum):
    constant = "constant"
    step = "step"
    cosine = "cosine"


@dataclass
class ModelConfig:
    name: ModelFamily = MISSING
    depth: int = MISSING
    residual: bool = True
    batch_norm: bool = True
    activation: Activation = Activation.relu
    kernel_initializer: Initializer = Initializer.he_normal
    shortcut: Shortcut = Shortcut.A
    width: int = 128  # mlp hidden width; vgg's two hidden dense layers
    blocks_per_stage: list[int] | None = None  # resnet_basic; derived from depth when null
    convs_per_stage: list[int] | None = None  # vgg (5 stages); derived from depth when null
    # skips on exactly these blocks (names as in lesion.csv, or -1 for the last); null: residual
    skip_at: list[str] | None = None
    residual_init: ResidualInit = ResidualInit.standard  # skipinit, fixup: nets without BN
    base_filters: int = 16  # first stage's filters (16 for resnet_cifar, 64 for resnet_basic)


@dataclass
class DataConfig:
    name: DatasetName = MISSING
    val_fraction: float = 0.2
    # synthetic only: shape and size of the generated data
    input_shape: list[int] = field(default_factory=lambda: [8, 8, 1])
    num_classes: int = 10
    num_samples: int = 512
    standardize: bool = True  # image datasets: per channel, training-split statistics
    # image datasets (cifar10, cifar100, mnist, fashion_mnist): a local copy in the
    # original format (folder or tarball); null: keras.datasets and its cache
    path: str | None = None
    label_mode: LabelMode = LabelMode.fine  # cifar100 only
    augment: bool = False  # pad-4 random crop + horizontal flip (He et al. 2016)


@dataclass
class ScheduleConfig:
    name: ScheduleName = ScheduleName.constant
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # fractions of training
    milestone_steps: list[int] | None = None  # in iterations; when set, replaces milestones
    gamma: float = 0.1
    warmup_steps: int = 0  # iterations at warmup_lr before the schedule starts (He et al.: 400)
    warmup_lr: float = 0.01


@dataclass
class OptimConfig:
    name: OptimizerName = MISSING
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    weight_decay_mode: WeightDecayMode = WeightDecayMode.decoupled
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)


@dataclass
class TrainerConfig:
    epochs: int = 10
    steps: int | None = None  # training length in iterations; when set, replaces epochs
    mixed_precision: bool = False  # mixed_float16 compute, float32 classifier, loss, gradients
    batch_size: int = 128
    deterministic: bool = False
    threads: int = 0  # 0: TensorFlow's default (all cores)
    shuffle_buffer: int = 0  # 0: the whole training set


@dataclass
class TrackingConfig:
    uri: str | None = None  # beats $MLFLOW_TRACKING_URI; null: that, else <project>/mlflow.db
    experiment: str = "resnet-exp"
    resume: bool = True  # skip a job whose identical config already has a FINISHED run
    parent_run_id: str | None = None  # set by the sweeper: the sweep's parent run
    sweep_id: str | None = None
    varying: list[str] = field(default_factory=list)  # set by the sweep: keys its run names show
    profile_images: bool = True  # log each epoch's layer-wise gradient profile as an image
    # save the run's state at every epoch's end (weights, optimiser, recorders) so a run
    # stopped by SIGTERM, pre-emption or a time limit continues where it was when relaunched
    # or requeued (tracking.resume); deleted when the run ends FINISHED or FAILED
    checkpoint: bool = True
    checkpoint_dir: str | None = None  # null: checkpoints/ beside a local store, else <project>/


@dataclass
class GradientsConfig:
    enabled: bool = True
    source: GradientSource = GradientSource.step
    probe_size: int = 64  # examples in the fixed probe batch (cost: ~one training step per epoch)


@dataclass
class LesionConfig:
    """Veit et al. 2016 block lesions after training (resnet_exp/recording/lesions.py)."""

    enabled: bool = False
    max_examples: int = 0  # validation examples to evaluate on; 0: all of them
    k: list[int] = field(default_factory=lambda: [1, 2, 4, 8])  # blocks deleted at once
    draws: int = 5  # seeded random draws per k


@dataclass
class BranchesConfig:
    """‖F(x)‖ / ‖x‖ per block on the gradient probe's batch (resnet_exp/recording/branches.py)."""

    enabled: bool = False


class BnMode(StrEnum):
    """How batch norm runs in the loss whose curvature is measured (docs/curvature.md)."""

    auto = "auto"  # training mode at initialisation, inference mode after it
    inference = "inference"  # the moving statistics: the net as it is evaluated
    training = "training"  # the batch's statistics: the loss the optimiser sees


@dataclass
class CurvatureConfig:
    """Hessian top eigenvalue, trace (and spectral density) of the data loss on a fixed batch,
    at initialisation, every `every` epochs and after training (resnet_exp/recording/curvature.py).
    Cost per measurement: about (iterations + samples + density_runs * lanczos_steps) x 1.5
    training steps' CPU per example of the batch, plus one trace."""

    enabled: bool = False
    examples: int = 256  # the fixed, seeded batch of training examples (normalised, unaugmented)
    iterations: int = 20  # power iteration's cap, per eigenvalue
    rtol: float = 1e-3  # power iteration stops when the eigenvalue moves less than this
    top_k: int = 1  # eigenvalues by deflation (eig_2 .. eig_k in curvature.csv)
    samples: int = 20  # Hutchinson's Rademacher vectors for the trace
    density_runs: int = 0  # stochastic Lanczos quadrature starts; 0: no spectral density
    lanczos_steps: int = 30
    every: int = 0  # also every N epochs; 0: at initialisation and after training only
    bn_mode: BnMode = BnMode.auto


@dataclass
class LandscapeConfig:
    """The loss around the trained weights along filter-normalised random directions (Li et al.
    2018; resnet_exp/recording/landscape.py). Cost: grid^2 (grid with surface=false) forward
    passes over `examples`; about one training epoch of the digits per 8,500 example-passes."""

    enabled: bool = False
    examples: int = 500  # the fixed, seeded subset of training examples
    grid: int = 21  # points per axis, odd (the trained weights at the centre)
    span: float = 1.0  # half-width of the grid in filter-normalised units
    surface: bool = True  # the 2D surface too, not only the 1D slice
    include_bias_bn: bool = False  # give biases and BN parameters a direction (Li et al.: no)
    batch_size: int = 500  # examples per forward pass


@dataclass
class Config:
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    optim: OptimConfig = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    gradients: GradientsConfig = field(default_factory=GradientsConfig)
    lesion: LesionConfig = field(default_factory=LesionConfig)
    branches: BranchesConfig = field(default_factory=BranchesConfig)
    curvature: CurvatureConfig = field(default_factory=CurvatureConfig)
    landscape: LandscapeConfig = field(default_factory=LandscapeConfig)
    seed: int = 0


def register_configs() -> None:
    """Put the schema in Hydra's ConfigStore.

    Only the whole config's schema is stored: its typed `model`, `data` and
    `optim` fields type whatever a group's YAML file puts there, so no schema
    needs to be a (selectable, `--help`-listed) option of a group.
    """
    ConfigStore.instance().store(name="config_schema", node=Config)


class ConfigError(ValueError):
    """A configuration the project cannot run; the message is one line."""


MAX_SEED = 2**32 - 1  # numpy's and Keras's seeds are unsigned 32-bit


def schema_keys() -> set[str]:
    """Every dotted key the schema defines (`model.depth`, `optim.schedule.gamma`, ...)."""
    schema = OmegaConf.structured(Config)
    for name, node in (("model", ModelConfig), ("data", DataConfig), ("optim", OptimConfig)):
        schema[name] = OmegaConf.structured(node)
    return set(flatten(schema))


def unknown_key(key: str) -> str:
    """`key: unknown key`, with the closest known key when one is close."""
    close = difflib.get_close_matches(key, sorted(schema_keys()), n=1)
    return f"{key}: unknown key" + (f"; did you mean {close[0]}?" if close else "")


def _check_known_keys(cfg: DictConfig | Any) -> None:
    """Hydra's `+key=value` adds a key even to a typed node: refuse it like a typo."""
    known = schema_keys()
    for key in flatten(cfg):
        if key not in known:
            raise ConfigError(unknown_key(key))


def check_config(cfg: DictConfig | Any) -> None:
    """Raise ConfigError for values that are well-typed but cannot run."""
    _check_known_keys(cfg)
    model, data, optim, trainer = cfg.model, cfg.data, cfg.optim, cfg.trainer
    if not 0 <= cfg.seed <= MAX_SEED:
        raise ConfigError(f"seed={cfg.seed}: must be between 0 and 2**32 - 1")
    try:
        per_stage = model.convs_per_stage if model.name == "vgg" else model.blocks_per_stage
        check_depth(str(model.name), int(model.depth), per_stage)
    except DepthError as err:
        raise ConfigError(f"model.depth={model.depth}: {err}") from None
    try:
        _, skips = blocks_with_skips(model)
    except DepthError as err:  # the depth is good: a bad skip_at entry
        skip_at = ",".join(str(s) for s in model.skip_at)
        raise ConfigError(f"model.skip_at=[{skip_at}]: {err}") from None
    problem = residual_init_problem(str(model.residual_init), bool(model.batch_norm), bool(skips))
    if problem:
        raise ConfigError(problem)
    positive = {
        "trainer.epochs": trainer.epochs,
        "trainer.batch_size": trainer.batch_size,
        "optim.lr": optim.lr,
        "model.width": model.width,
        "model.base_filters": model.base_filters,
        "gradients.probe_size": cfg.gradients.probe_size,
        "data.num_samples": data.num_samples,
    }
    for key, value in positive.items():
        if value is None or value <= 0:
            raise ConfigError(f"{key}={value}: must be > 0")
    lesion = cfg.lesion
    if lesion.max_examples < 0:
        raise ConfigError(f"lesion.max_examples={lesion.max_examples}: must be >= 0 (0 = all)")
    if lesion.draws <= 0:
        raise ConfigError(f"lesion.draws={lesion.draws}: must be > 0")
    if any(k <= 0 for k in lesion.k):
        raise ConfigError(f"lesion.k={list(lesion.k)}: blocks deleted at once must be > 0")
    if lesion.enabled and not lesion.k:
        raise ConfigError("lesion.k=[]: lesion.enabled=true needs at least one count of blocks")
    _check_curvature_and_landscape(cfg.curvature, cfg.landscape)
    if data.num_classes < 2:
        raise ConfigError(
            f"data.num_classes={data.num_classes}: must be >= 2 (one class teaches nothing)"
        )
    if trainer.shuffle_buffer < 0:
        raise ConfigError(
            f"trainer.shuffle_buffer={trainer.shuffle_buffer}: must be >= 0 (0 = the whole set)"
        )
    if trainer.threads < 0:
        raise ConfigError(f"trainer.threads={trainer.threads}: must be >= 0 (0 = all cores)")
    if not 0.0 <= data.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction={data.val_fraction}: must be in [0, 1)")
    _check_length(cfg)
    _check_image_data(data)
    if optim.weight_decay < 0:
        raise ConfigError(f"optim.weight_decay={optim.weight_decay}: must be >= 0")
    if str(optim.weight_decay_mode) == "l2" and str(optim.name) != "sgd":
        raise ConfigError(
            f"optim.weight_decay_mode=l2: only optim=sgd; {optim.name} decays decoupled"
        )
    if not 0.0 <= optim.momentum < 1.0:
        raise ConfigError(f"optim.momentum={optim.momentum}: must be in [0, 1)")
    milestones = list(optim.schedule.milestones)
    if any(not 0.0 < m < 1.0 for m in milestones) or not _increasing(milestones):
        raise ConfigError(
            f"optim.schedule.milestones={milestones}: must be increasing fractions in (0, 1)"
        )
    if not 0.0 < optim.schedule.gamma <= 1.0:  # the rate stays positive and never grows
        raise ConfigError(
            f"optim.schedule.gamma={optim.schedule.gamma}: must be in (0, 1], the factor the "
            "rate is multiplied by at each milestone"
        )
    shape = list(data.input_shape)
    if len(shape) not in (1, 3) or min(shape) <= 0:
        raise ConfigError(
            f"data.input_shape={shape}: must be [features] or [height, width, channels]"
        )
    if len(shape) != 3 and str(model.name) != "mlp":
        raise ConfigError(
            f"data.input_shape={shape}: {model.name} needs [height, width, channels]; "
            "only model=mlp takes flat features"
        )


def residual_init_problem(residual_init: str, batch_norm: bool, has_skips: bool) -> str | None:
    """Why `model.residual_init` cannot build this net (one line), or None.

    SkipInit and Fixup replace batch norm in the residual branches, so they need a net
    without it and with at least one skip; `build_model` refuses the same combinations.
    """
    if residual_init == ResidualInit.standard:
        return None
    if batch_norm:
        return (
            f"model.residual_init={residual_init}: needs model.batch_norm=false "
            "(Fixup and SkipInit replace batch norm)"
        )
    if not has_skips:
        return (
            f"model.residual_init={residual_init}: needs skip connections "
            "(model.residual=true or a non-empty model.skip_at)"
        )
    return None


def _check_length(cfg: DictConfig | Any) -> None:
    """Training length in iterations, milestones in iterations, warm-up."""
    trainer, schedule = cfg.trainer, cfg.optim.schedule
    if trainer.steps is not None and trainer.steps <= 0:
        raise ConfigError(f"trainer.steps={trainer.steps}: must be > 0 (null: use trainer.epochs)")
    if schedule.milestone_steps is not None:
        steps = list(schedule.milestone_steps)
        if any(m <= 0 for m in steps) or not _increasing(steps):
            raise ConfigError(
                f"optim.schedule.milestone_steps={steps}: must be increasing positive iterations"
            )
        if trainer.steps is not None and steps and steps[-1] >= trainer.steps:
            raise ConfigError(
                f"optim.schedule.milestone_steps={steps}: must be below "
                f"trainer.steps={trainer.steps}"
            )
    if schedule.warmup_steps < 0:
        raise ConfigError(f"optim.schedule.warmup_steps={schedule.warmup_steps}: must be >= 0")
    if schedule.warmup_steps and schedule.warmup_lr <= 0:
        raise ConfigError(f"optim.schedule.warmup_lr={schedule.warmup_lr}: must be > 0")
    if trainer.steps is not None and schedule.warmup_steps >= trainer.steps:
        raise ConfigError(
            f"optim.schedule.warmup_steps={schedule.warmup_steps}: must be below "
            f"trainer.steps={trainer.steps} (else the whole run is warm-up)"
        )


def _increasing(values: list) -> bool:
    """Strictly increasing: two equal milestones would be one drop counted twice."""
    return all(a < b for a, b in zip(values, values[1:], strict=False))


def _check_image_data(data: DictConfig | Any) -> None:
    """label_mode, augment and path only where they mean something; a local copy is complete."""
    from resnet_exp.data.files import SPECS, missing_file

    name = str(data.name)
    if str(data.label_mode) != "fine" and name != "cifar100":
        raise ConfigError(
            f"data.label_mode={data.label_mode}: only data=cifar100 has coarse labels"
        )
    if name not in SPECS:
        if data.path is not None:
            raise ConfigError(f"data.path={data.path}: data={name} reads no files")
        if data.augment:
            raise ConfigError(f"data.augment=true: only image datasets ({', '.join(SPECS)})")
        return
    if data.path is not None:
        problem = missing_file(name, str(data.path))
        if problem:
            raise ConfigError(problem)


def flatten(cfg: DictConfig | dict, prefix: str = "") -> dict[str, Any]:
    """Dotted-key view of a config (`model.depth`), the form MLflow params take."""
    container = (
        OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        if isinstance(cfg, DictConfig)
        else cfg
    )
    flat: dict[str, Any] = {}
    for key, value in container.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, prefix=f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def _check_curvature_and_landscape(curvature: Any, landscape: Any) -> None:
    positive = {
        "curvature.examples": curvature.examples,
        "curvature.iterations": curvature.iterations,
        "curvature.rtol": curvature.rtol,
        "curvature.top_k": curvature.top_k,
        "curvature.samples": curvature.samples,
        "curvature.lanczos_steps": curvature.lanczos_steps,
        "landscape.examples": landscape.examples,
        "landscape.span": landscape.span,
        "landscape.batch_size": landscape.batch_size,
    }
    for key, value in positive.items():
        if value is None or value <= 0:
            raise ConfigError(f"{key}={value}: must be > 0")
    for key, value in (("curvature.density_runs", curvature.density_runs),
                       ("curvature.every", curvature.every)):  # fmt: skip
        if value < 0:
            raise ConfigError(f"{key}={value}: must be >= 0 (0 = off)")
    if curvature.samples < 2:
        raise ConfigError(
            f"curvature.samples={curvature.samples}: must be >= 2 (the trace's error bar)"
        )
    if landscape.grid < 3 or landscape.grid % 2 == 0:
        raise ConfigError(
            f"landscape.grid={landscape.grid}: must be odd and >= 3 "
            "(the trained weights sit at the grid's centre)"
        )
