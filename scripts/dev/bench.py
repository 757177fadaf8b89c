"""What does the framework cost, and how close is training to the machine's limit? One table.

    python scripts/dev/bench.py --quick        # a few minutes
    python scripts/dev/bench.py                # full mode (~15-20 min on a quiet 2-core machine)
    python scripts/dev/bench.py --parts recording framework --repeats 3

Every row is a ratio of two things measured side by side in this one session
(`benchkit`), so a loaded machine shifts both alike. Parts:

1. recording: a whole run (MLflow run duration, and the process's CPU time
   over the run, steadier when others load the machine) with gradient recording on
   (source=step, the default; and source=probe, the fixed probe) over off, at
   the default study's settings (digits, batch 64) and at CIFAR scale
   (synthetic 32x32x3, ResNet-20, batch 128).
2. framework: our MLflow run over a hand-written `model.fit` of the same model,
   data, batch and epochs (data loading, model build and trace included), per
   whole run, first epoch and steady-state epoch; and process start to the first
   epoch's start over the time `import tensorflow, keras` takes.
3. flops: achieved training FLOP/s of ResNet-20 on 32x32x3 over the peak of a
   large float32 matmul, each variant (default, XLA, oneDNN off, ...) in its own
   process so its thread and oneDNN settings take effect.
4. study: the default study (`make demo`'s 12 jobs) parallel over sequential.
5. figures: regenerating the figures and report of a fake 200-run x 50-epoch
   store with the batched SQL load over the per-metric client load.

The table goes to stdout and, as CSV and Markdown, to --out (default
reports/bench/).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from benchkit import (
    Row,
    interleaved,
    log,
    markdown,
    ratio_row,
    run_python,
    steady,
    stopwatch,
    write_table,
)

ROOT = Path(__file__).resolve().parents[2]
PARTS = ["recording", "framework", "flops", "study", "figures"]
FLOPS_VARIANTS = {
    "default": {},
    "xla": {"jit": True},
    "onednn-off": {"env": {"TF_ENABLE_ONEDNN_OPTS": "0"}},
    "1-thread": {"threads": 1},
}
SETTINGS = {  # name: (quick mode's value, full mode's, help); each one a command-line option
    "depths": ([20], [20, 56], "part 1: digits depths (part 2 uses the first)"),
    "epochs": (3, 15, "parts 1-2: epochs of a digits run"),
    "repeats": (2, 3, "parts 1-2: interleaved repeats of each variant"),
    "cifar_samples": (
        2048,
        50000,
        "part 1: images per epoch at CIFAR scale (CIFAR-10: 50000; 0: skip)",
    ),
    "cifar_epochs": (1, 1, "part 1: epochs at CIFAR scale"),
    "flops_steps": (6, 20, "part 3: timed training steps of batch 128"),
    "flops_variants": (
        ["default", "xla"],
        list(FLOPS_VARIANTS),
        f"part 3: any of {', '.join(FLOPS_VARIANTS)}",
    ),
    "study_epochs": (
        1,
        2,
        "part 4: epochs of each study job (15: the preset's, the 4-minute target)",
    ),
    "study_depths": ("8,20", "", "part 4: depths to sweep, e.g. 8,20 ('': the preset's six)"),
    "figure_runs": (40, 200, "part 5: runs in the fake store"),
    "figure_epochs": (10, 50, "part 5: epochs per fake run"),
}


# ---------------------------------------------------------------- runs through the framework


class Runner:
    """Runs jobs in this process through `run_job`, into one temporary MLflow store."""

    def __init__(self, store: Path):
        from mlflow.tracking import MlflowClient

        import resnet_exp
        from resnet_exp.config.schema import register_configs

        register_configs()
        # The config tree next to the library in use, so an older checkout on
        # PYTHONPATH is measured with its own schema (before/after comparisons).
        self.root = Path(resnet_exp.__file__).resolve().parents[1]
        self.uri = f"sqlite:///{store / 'mlflow.db'}"
        os.environ["MLFLOW_TRACKING_URI"] = self.uri
        self.client = MlflowClient(self.uri)
        # One tiny run first: the process's one-off costs (TensorFlow's runtime,
        # the store's tables) are nobody's, and must not land on the first variant.
        self.run(["data=synthetic", "data.num_samples=64", "trainer.epochs=1", "model.depth=8"])

    def run(self, overrides: list[str]) -> str:
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        from resnet_exp.run.job import run_job

        GlobalHydra.instance().clear()
        with initialize_config_dir(str(self.root / "conf"), version_base="1.3"):
            config = compose("config", overrides=[*overrides, "tracking.resume=false"])
        return run_job(config, overrides=overrides).run_id

    def timed(self, overrides: list[str]) -> tuple[float, list[float]]:
        """A run's duration in MLflow and its epochs' seconds, like `bare_fit`'s."""
        run_id = self.run(overrides)
        info = self.client.get_run(run_id).info
        history = sorted(
            self.client.get_metric_history(run_id, "epoch_time_s"), key=lambda m: m.step
        )
        return (info.end_time - info.start_time) / 1000.0, [m.value for m in history]


def digits_run(depth: int, epochs: int) -> list[str]:
    """The default study's settings for one depth (plain, the recorder's harder case)."""
    return [
        "experiment=depth_sweep",
        f"model.depth={depth}",
        "model.residual=false",
        f"trainer.epochs={epochs}",
        "tracking.experiment=bench",
    ]


def cifar_run(samples: int, epochs: int) -> list[str]:
    """ResNet-20 on `samples` synthetic 32x32x3 training images per epoch."""
    total = round(samples / 0.8)  # val_fraction 0.2: `samples` left for training
    return [
        "data=synthetic",
        "data.input_shape=[32,32,3]",
        f"data.num_samples={total}",
        "model.depth=20",
        "trainer.batch_size=128",
        f"trainer.epochs={epochs}",
        "tracking.experiment=bench",
    ]


STEP = ["gradients.enabled=true", "gradients.source=step"]
RECORDING = {
    "off": ["gradients.enabled=false"],
    "on (step)": STEP,
    "on (step, no images)": [*STEP, "tracking.profile_images=false"],
    "on (probe)": ["gradients.enabled=true", "gradients.source=probe"],
    "on (default)": ["gradients.enabled=true"],  # an older checkout: its only recorder, the probe
}


def part_recording(runner: Runner, s: dict, variants: list[str]) -> list[Row]:
    rows = []
    scales = [
        (f"digits, ResNet-{d}, {s['epochs']} ep", digits_run(d, s["epochs"])) for d in s["depths"]
    ]
    if s["cifar_samples"]:
        label = f"CIFAR scale ({s['cifar_samples']} img/ep), ResNet-20, {s['cifar_epochs']} ep"
        scales.append((label, cifar_run(s["cifar_samples"], s["cifar_epochs"])))
    for i, (label, base) in enumerate(scales):
        log(f"recording: {label}")
        # the fixed probe's cost is known to be large, and the images' cost is a fixed
        # amount per epoch: both are split out at the first (smallest) scale only
        later = ("on (probe)", "on (step, no images)")
        chosen = variants if i == 0 else [v for v in variants if v not in later]
        series = fit_series(
            {v: partial(runner.timed, base + RECORDING[v]) for v in chosen}, s["repeats"]
        )
        target = "<= 1.05" if "digits" in label else "<= 1.01"
        for v in chosen[1:]:
            for measure, key in (("run duration", "run"), ("CPU time", "run CPU")):
                rows.append(
                    ratio_row("1 recording", f"{measure}, {label}", series[key], v, "off", target)
                )
    return rows


# ---------------------------------------------------------------- bare Keras, side by side


def bare_fit(depth: int, epochs: int, batch: int) -> tuple[float, list[float]]:
    """What a user writes by hand: load, build, compile, fit (with validation)."""
    import keras

    from resnet_exp.config.schema import DataConfig, ModelConfig
    from resnet_exp.data.splits import load_dataset
    from resnet_exp.models import build_model

    starts: list[float] = []
    epoch_times: list[float] = []
    clock = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: starts.append(time.perf_counter()),
        on_epoch_end=lambda epoch, logs: epoch_times.append(time.perf_counter() - starts[-1]),
    )
    with stopwatch() as elapsed:
        keras.backend.clear_session()
        data = load_dataset(DataConfig(name="digits"), seed=0)
        model = build_model(
            ModelConfig(name="resnet_cifar", depth=depth, residual=False),
            input_shape=data.input_shape,
            num_classes=10,
            seed=0,
        )
        model.compile(
            optimizer=keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=1e-4),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        model.fit(
            data.x_train,
            data.y_train,
            batch_size=batch,
            epochs=epochs,
            validation_data=(data.x_val, data.y_val),
            callbacks=[clock],
            verbose=0,
        )
    return elapsed(), epoch_times


def fit_series(
    variants: dict[str, Callable[[], tuple[float, list[float]]]],
    repeats: int,
    epoch_cpu: list[float] | None = None,
) -> dict[str, dict[str, list[float]]]:
    """Interleave runs or fits that each return (seconds, epochs' seconds), as `bare_fit` does.

    Per measure, per variant, one value a repeat: "run" (the seconds returned),
    "run CPU" (this process's CPU seconds over it), "epoch 1", "steady" and, given
    `epoch_cpu`, the list a per-epoch CPU clock fills during each fit, "steady CPU".
    """
    keys = ("run CPU", "epoch 1", "steady", "steady CPU")
    series: dict[str, dict[str, list[float]]] = {k: {v: [] for v in variants} for k in keys}

    def measure(variant: str) -> float:
        if epoch_cpu is not None:
            epoch_cpu.clear()
        with stopwatch(cpu=True) as cpu:
            seconds, epochs = variants[variant]()
        series["run CPU"][variant].append(cpu())
        series["epoch 1"][variant].append(epochs[0])
        series["steady"][variant].append(steady(epochs))
        if epoch_cpu is not None:
            series["steady CPU"][variant].append(steady(epoch_cpu))
        return seconds

    series["run"] = interleaved({v: partial(measure, v) for v in variants}, repeats, log)
    return series


def process_to_first_epoch(runner: Runner) -> float:
    """Seconds from launching `experiments/train.py` to its first epoch's start."""
    overrides = [*digits_run(20, 1), "gradients.enabled=false", "tracking.resume=false"]
    with tempfile.TemporaryDirectory() as tmp:
        overrides.append(f"hydra.run.dir={tmp}")
        start = time.time()
        train = str(runner.root / "experiments" / "train.py")
        run_python([train, *overrides], env={"MLFLOW_TRACKING_URI": runner.uri}, cwd=tmp)
    exp = runner.client.get_experiment_by_name("bench")
    run = runner.client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])[0]
    (epoch,) = runner.client.get_metric_history(run.info.run_id, "epoch_time_s")
    return epoch.timestamp / 1000.0 - epoch.value - start


def tf_import_seconds() -> float:
    code = "import time; t = time.time(); import tensorflow, keras; print(time.time() - t)"
    return float(run_python(["-c", code]).stdout.strip().splitlines()[-1])


def part_framework(runner: Runner, s: dict) -> list[Row]:
    depth, epochs, batch = s["depths"][0], s["epochs"], 64
    log(f"framework: ResNet-{depth} plain, digits, {epochs} epochs, batch {batch}, gradients off")
    framework = [*digits_run(depth, epochs), "gradients.enabled=false"]
    series = fit_series(
        {
            "framework": partial(runner.timed, framework),
            "bare Keras": partial(bare_fit, depth, epochs, batch),
        },
        s["repeats"],
    )
    label = f"ResNet-{depth}, {epochs} ep"
    rows = [
        ratio_row(
            "2 framework", f"{measure}, {label}", series[key], "framework", "bare Keras", target
        )
        for measure, key, target in (
            ("whole run", "run", "<= 1.10"),
            ("epoch 1 (trace)", "epoch 1", ""),
            ("steady epoch", "steady", ""),
        )
    ]
    log("framework: process start to first epoch, and TensorFlow's import alone")
    starts = interleaved(
        {
            "start -> epoch 1": partial(process_to_first_epoch, runner),
            "import TF": tf_import_seconds,
        },
        s["repeats"],
        log,
    )
    measure, subject, baseline = "process start to epoch 1", "start -> epoch 1", "import TF"
    row = ratio_row("2 framework", measure, starts, subject, baseline, "gap < 3 s")
    row.note = f"gap {row.subject_value - row.baseline_value:.2f} s"
    return [*rows, row]


# ---------------------------------------------------------------- FLOP/s against the peak


def conv_dense_flops(model) -> int:
    """Forward FLOPs per example of the convolutions and dense layers (2 per multiply-add).

    Batch norm, activations, additions and pooling are left out: they are a
    few percent of the arithmetic (and memory-bound, not FLOP-bound).
    """
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense):
            # a kernel's weights apply at each output position (a dense layer's: one)
            total += 2 * math.prod(layer.kernel.shape) * math.prod(layer.output.shape[1:-1])
    return int(total)


def flops_child(variant: str, steps: int, batch: int = 128) -> dict[str, float]:
    """In a fresh process: peak matmul FLOP/s and ResNet-20's training FLOP/s."""
    import numpy as np
    import tensorflow as tf

    options = FLOPS_VARIANTS[variant]
    if "threads" in options:
        tf.config.threading.set_intra_op_parallelism_threads(options["threads"])
        tf.config.threading.set_inter_op_parallelism_threads(options["threads"])
    import keras

    from resnet_exp.config.schema import ModelConfig
    from resnet_exp.models import build_model

    n = 2048
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    matmuls = [
        tf.function(lambda: tf.linalg.matmul(a, b), jit_compile=jit) for jit in (False, True)
    ]

    def peak_flops() -> float:
        """The best of both matmul kernels (Eigen/oneDNN and XLA), best of 5 runs each."""
        best = float("inf")
        for matmul in matmuls:
            matmul().numpy()
            for _ in range(5):
                with stopwatch() as elapsed:
                    matmul().numpy()
                best = min(best, elapsed())
        return 2 * n**3 / best

    peak_before = peak_flops()
    keras.utils.set_random_seed(0)
    model = build_model(
        ModelConfig(name="resnet_cifar", depth=20), input_shape=(32, 32, 3), num_classes=10, seed=0
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        jit_compile=options.get("jit", False),
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * batch, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, len(x))
    model.fit(x[:batch], y[:batch], batch_size=batch, epochs=1, verbose=0)  # trace
    with stopwatch() as elapsed:
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    # training = forward + gradients w.r.t. inputs and weights: about 3x the forward pass
    per_image = 3 * conv_dense_flops(model)
    peak = max(peak_flops(), peak_before)  # before and after training: load drifts
    return {"peak": peak, "achieved": per_image * len(x) / elapsed(), "per_image": per_image}


def part_flops(s: dict) -> list[Row]:
    rows = []
    for variant in s["flops_variants"]:
        log(f"flops: {variant}")
        child = [__file__, "--flops-child", variant, "--flops-steps", str(s["flops_steps"])]
        out = run_python(child, env=FLOPS_VARIANTS[variant].get("env"))
        result = json.loads(out.stdout.strip().splitlines()[-1])
        gflops = {"achieved": [result["achieved"] / 1e9], "matmul peak": [result["peak"] / 1e9]}
        measure = f"GFLOP/s, ResNet-20 32x32x3 training, batch 128, {variant}"
        note = f"{result['per_image'] / 1e6:.0f} MFLOP/image (3x forward)"
        rows.append(ratio_row("3 flops", measure, gflops, *gflops, note=note))
    return rows


# ---------------------------------------------------------------- the default study


def part_study(s: dict) -> list[Row]:
    from bench_sweep import time_study

    extra = [f"trainer.epochs={s['study_epochs']}"]
    if s["study_depths"]:
        extra.append(f"model.depth={s['study_depths']}")
    log(f"study: depth_sweep {' '.join(extra)}, sequential vs parallel")
    times = time_study("depth_sweep", extra, 1, log)
    jobs = "12 jobs" if not s["study_depths"] else f"depths {s['study_depths']} x 2"
    measure = f"default study, {jobs}, {s['study_epochs']} ep"
    target = "parallel <= 240 s" if s["study_epochs"] == 15 and not s["study_depths"] else ""
    return [ratio_row("4 study", measure, times, "parallel (joblib)", "sequential", target)]


# ---------------------------------------------------------------- figures from a big store


def part_figures(s: dict) -> list[Row]:
    from bench_load import log_study

    from resnet_exp.analysis.command import main as make_figures

    runs, epochs = s["figure_runs"], s["figure_epochs"]
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        log(f"figures: logging a fake store of {runs} runs x {epochs} epochs")
        with stopwatch() as elapsed:
            log_study(uri, runs, epochs, os.path.join(tmp, "artifacts"))
        logged = elapsed()

        def regenerate(method: str) -> float:
            args = ["--experiment", "bench", "--tracking-uri", uri, "--no-log"]
            args += ["--out", os.path.join(tmp, method), "--method", method]
            with stopwatch() as elapsed:
                make_figures(args)
            return elapsed()

        paths = {"batched SQL load": "sql", "per-metric client": "client"}
        times = interleaved({k: partial(regenerate, m) for k, m in paths.items()}, 1, log)
    measure = f"regenerate figures + report, {runs} runs x {epochs} ep"
    row = ratio_row("5 figures", measure, times, *paths, note=f"store logged in {logged:.0f} s")
    return [row]


# ---------------------------------------------------------------- main


def machine() -> str:
    import tensorflow as tf

    info = Path("/proc/cpuinfo")  # Linux: the CPU's name, where `platform` gives only x86_64
    names = re.findall(r"^model name\s*:(.*)$", info.read_text(), re.M) if info.exists() else []
    cpu = names[0].strip() if names else platform.processor() or platform.machine()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"TensorFlow {tf.__version__}, load average at start {load:.1f}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small settings: a few minutes")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=PARTS)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "reports" / "bench", help="for bench.csv and bench.md"
    )
    parser.add_argument(
        "--recording-variants",
        nargs="+",
        choices=list(RECORDING),
        default=["off", "on (step)", "on (step, no images)", "on (probe)"],
        help="an older checkout knows only 'off' and 'on (default)'",
    )
    for key, (quick, full, about) in SETTINGS.items():  # None: the mode's value
        nargs = "+" if isinstance(full, list) else None
        about = f"{about} (quick: {quick}, full: {full})"
        kind = type(full[0] if nargs else full)
        parser.add_argument("--" + key.replace("_", "-"), nargs=nargs, type=kind, help=about)
    parser.add_argument("--flops-child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode = 0 if args.quick else 1
    settings = {
        k: getattr(args, k) if getattr(args, k) is not None else values[mode]
        for k, values in SETTINGS.items()
    }
    if args.flops_child:
        print(json.dumps(flops_child(args.flops_child, settings["flops_steps"])))
        return 0
    command = f"python scripts/dev/bench.py {' '.join(argv or sys.argv[1:])}"
    header = f"Machine: {machine()}. Command: `{command}`"
    log(header)
    rows: list[Row] = []
    with stopwatch() as total, tempfile.TemporaryDirectory() as store:
        if {"recording", "framework"} & set(args.parts):
            runner = Runner(Path(store))
            if "recording" in args.parts:
                rows += part_recording(runner, settings, args.recording_variants)
            if "framework" in args.parts:
                rows += part_framework(runner, settings)
        if "flops" in args.parts:
            rows += part_flops(settings)
        if "study" in args.parts:
            rows += part_study(settings)
        if "figures" in args.parts:
            rows += part_figures(settings)
    header += f" Took {total() / 60:.1f} min."
    csv_path, md_path = write_table(rows, args.out, header)
    print(header + "\n\n" + markdown(rows))
    log(f"wrote {csv_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
