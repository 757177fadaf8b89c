"""What does the framework cost, and how close is training to the machine's limit? One table.

    python scripts/dev/bench.py --quick        # a few minutes
    python scripts/dev/bench.py                # full mode (~15-20 min on a quiet 2-core machine)
    python scripts/dev/bench.py --parts recording framework --repeats 3

Every row is a ratio of two things measured side by side in this one session
(alternating order, medians; the spread is the range of the paired ratios), so
a loaded machine shifts both alike. Parts:

1. recording: a whole run (MLflow run duration, and the process's CPU time
   over the run, steadier when others load the machine) with gradient recording on
   (source=step, the default; and source=probe, the fixed probe) over off, at
   the default study's settings (digits, batch 64) and at CIFAR scale
   (synthetic 32x32x3, ResNet-20, batch 128).
2. framework: our MLflow run over a hand-written `model.fit` of the same model,
   data, batch and epochs (data loading, model build and trace included), per
   whole run and per steady-state epoch; and process start to the first epoch's
   start over the time `import tensorflow, keras` takes.
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
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchkit import Row, interleaved, markdown, ratio_row, stopwatch, write_table

ROOT = Path(__file__).resolve().parents[2]
PARTS = ["recording", "framework", "flops", "study", "figures"]
FLOPS_VARIANTS = {
    "default": {},
    "xla": {"jit": True},
    "onednn-off": {"env": {"TF_ENABLE_ONEDNN_OPTS": "0"}},
    "1-thread": {"threads": 1},
}
QUICK = dict(
    depths=[20],
    epochs=3,
    repeats=2,
    cifar_samples=2048,
    cifar_epochs=1,
    flops_steps=6,
    flops_variants=["default", "xla"],
    study_epochs=1,
    study_depths="8,20",
    figure_runs=40,
    figure_epochs=10,
)
FULL = dict(
    depths=[20, 56],
    epochs=15,
    repeats=3,
    cifar_samples=50000,
    cifar_epochs=1,
    flops_steps=20,
    flops_variants=list(FLOPS_VARIANTS),
    study_epochs=2,
    study_depths="",
    figure_runs=200,
    figure_epochs=50,
)

SETTINGS_HELP = {
    "depths": "part 1: digits depths (part 2 uses the first)",
    "epochs": "parts 1-2: epochs of a digits run",
    "repeats": "parts 1-2: interleaved repeats of each variant",
    "cifar_samples": "part 1: images per epoch at CIFAR scale (CIFAR-10: 50000; 0: skip)",
    "cifar_epochs": "part 1: epochs at CIFAR scale",
    "flops_steps": "part 3: timed training steps of batch 128",
    "flops_variants": f"part 3: any of {', '.join(FLOPS_VARIANTS)}",
    "study_epochs": "part 4: epochs of each study job (15: the preset's, the 4-minute target)",
    "study_depths": "part 4: depths to sweep, e.g. 8,20 ('': the preset's six)",
    "figure_runs": "part 5: runs in the fake store",
    "figure_epochs": "part 5: epochs per fake run",
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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
        self.conf = self.root / "conf"
        self.uri = f"sqlite:///{store / 'mlflow.db'}"
        os.environ["MLFLOW_TRACKING_URI"] = self.uri
        self.client = MlflowClient(self.uri)
        # One tiny run first: the process's one-off costs (TensorFlow's runtime,
        # the store's tables) are nobody's, and must not land on the first variant.
        self.run(["data=synthetic", "data.num_samples=64", "trainer.epochs=1", "model.depth=8"])

    def config(self, overrides: list[str]):
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
        with initialize_config_dir(str(self.conf), version_base="1.3"):
            return compose("config", overrides=[*overrides, "tracking.resume=false"])

    def run(self, overrides: list[str]) -> str:
        from resnet_exp.run.job import run_job

        outcome = run_job(self.config(overrides), overrides=overrides)
        return outcome.run_id

    def duration(self, run_id: str) -> float:
        info = self.client.get_run(run_id).info
        return (info.end_time - info.start_time) / 1000.0

    def timed(self, overrides: list[str]) -> float:
        return self.duration(self.run(overrides))

    def epoch_times(self, run_id: str) -> list[float]:
        history = self.client.get_metric_history(run_id, "epoch_time_s")
        return [m.value for m in sorted(history, key=lambda m: m.step)]


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


RECORDING = {
    "off": ["gradients.enabled=false"],
    "on (step)": ["gradients.enabled=true", "gradients.source=step"],
    "on (step, no images)": [
        "gradients.enabled=true",
        "gradients.source=step",
        "tracking.profile_images=false",
    ],
    "on (probe)": ["gradients.enabled=true", "gradients.source=probe"],
    "on (default)": ["gradients.enabled=true"],  # an older checkout: its only recorder, the probe
}


def part_recording(runner: Runner, s: dict, variants: list[str]) -> list[Row]:
    rows = []
    scales = [
        (f"digits, ResNet-{d}, {s['epochs']} ep", digits_run(d, s["epochs"])) for d in s["depths"]
    ]
    if s["cifar_samples"]:
        scales.append(
            (
                f"CIFAR scale ({s['cifar_samples']} img/ep), ResNet-20, {s['cifar_epochs']} ep",
                cifar_run(s["cifar_samples"], s["cifar_epochs"]),
            )
        )
    for i, (label, base) in enumerate(scales):
        log(f"recording: {label}")
        # the fixed probe's cost is known to be large, and the images' cost is a fixed
        # amount per epoch: both are split out at the first (smallest) scale only
        later = ("on (probe)", "on (step, no images)")
        chosen = variants if i == 0 else [v for v in variants if v not in later]
        cpu: dict[str, list[float]] = {v: [] for v in chosen}

        def measure(variant: str, overrides: list[str], cpu: dict = cpu) -> float:
            with stopwatch(cpu=True) as cpu_seconds:
                wall = runner.timed(overrides)
            cpu[variant].append(cpu_seconds())
            return wall

        times = interleaved(
            {v: (lambda v=v, o=base: measure(v, o + RECORDING[v])) for v in chosen},
            s["repeats"],
            log,
        )
        target = "<= 1.05" if "digits" in label else "<= 1.01"
        for v in chosen[1:]:
            rows.append(ratio_row("1 recording", f"run duration, {label}", times, v, "off", target))
            rows.append(ratio_row("1 recording", f"CPU time, {label}", cpu, v, "off", target))
    return rows


# ---------------------------------------------------------------- bare Keras, side by side


def bare_fit(depth: int, epochs: int, batch: int) -> tuple[float, list[float]]:
    """What a user writes by hand: load, build, compile, fit (with validation)."""
    import keras

    from resnet_exp.data.splits import load_dataset
    from resnet_exp.models import build_model

    epoch_times: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_times.append(time.perf_counter() - self.start)

    with stopwatch() as elapsed:
        keras.backend.clear_session()
        data = load_dataset("digits", seed=0)
        model = build_model(
            "resnet_cifar",
            depth,
            input_shape=data.input_shape,
            num_classes=10,
            residual=False,
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
            callbacks=[Clock()],
            verbose=0,
        )
    return elapsed(), epoch_times


def process_to_first_epoch(runner: Runner) -> float:
    """Seconds from launching `experiments/train.py` to its first epoch's start."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MLFLOW_TRACKING_URI": runner.uri}
    overrides = [*digits_run(20, 1), "gradients.enabled=false", "tracking.resume=false"]
    with tempfile.TemporaryDirectory() as tmp:
        overrides.append(f"hydra.run.dir={tmp}")
        start = time.time()
        subprocess.run(
            [sys.executable, str(runner.root / "experiments" / "train.py"), *overrides],
            env=env,
            cwd=tmp,
            check=True,
            capture_output=True,
        )
    exp = runner.client.get_experiment_by_name("bench")
    run = runner.client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])[0]
    (epoch,) = runner.client.get_metric_history(run.info.run_id, "epoch_time_s")
    return epoch.timestamp / 1000.0 - epoch.value - start


def tf_import_seconds() -> float:
    code = "import time; t = time.time(); import tensorflow, keras; print(time.time() - t)"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def part_framework(runner: Runner, s: dict) -> list[Row]:
    depth, epochs, batch = s["depths"][0], s["epochs"], 64
    log(f"framework: ResNet-{depth} plain, digits, {epochs} epochs, batch {batch}, gradients off")
    epochs_of: dict[str, list[list[float]]] = {"framework": [], "bare Keras": []}

    def framework() -> float:
        run_id = runner.run([*digits_run(depth, epochs), "gradients.enabled=false"])
        epochs_of["framework"].append(runner.epoch_times(run_id))
        return runner.duration(run_id)

    def bare() -> float:
        seconds, epoch_times = bare_fit(depth, epochs, batch)
        epochs_of["bare Keras"].append(epoch_times)
        return seconds

    times = interleaved({"framework": framework, "bare Keras": bare}, s["repeats"], log)
    steady = {
        name: [statistics.median(run[1:] or run) for run in runs]
        for name, runs in epochs_of.items()
    }
    first = {name: [run[0] for run in runs] for name, runs in epochs_of.items()}
    label = f"ResNet-{depth}, {epochs} ep"
    rows = [
        ratio_row(
            "2 framework", f"whole run, {label}", times, "framework", "bare Keras", "<= 1.10"
        ),
        ratio_row("2 framework", f"epoch 1 (trace), {label}", first, "framework", "bare Keras"),
        ratio_row("2 framework", f"steady epoch, {label}", steady, "framework", "bare Keras"),
    ]
    log("framework: process start to first epoch, and TensorFlow's import alone")
    starts = interleaved(
        {
            "start -> epoch 1": lambda: process_to_first_epoch(runner),
            "import TF": tf_import_seconds,
        },
        s["repeats"],
        log,
    )
    row = ratio_row(
        "2 framework", "process start to epoch 1", starts, "start -> epoch 1", "import TF"
    )
    row.target = "gap < 3 s"
    row.note = f"gap {row.subject_value - row.baseline_value:.2f} s"
    rows.append(row)
    return rows


# ---------------------------------------------------------------- FLOP/s against the peak


def conv_dense_flops(model) -> int:
    """Forward FLOPs per example of the convolutions and dense layers (2 per multiply-add).

    Batch norm, activations, additions and pooling are left out: they are a
    few percent of the arithmetic (and memory-bound, not FLOP-bound).
    """
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            total += 2 * kh * kw * cin * cout * h * w
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
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
    model = build_model("resnet_cifar", 20, input_shape=(32, 32, 3), num_classes=10, seed=0)
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
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **FLOPS_VARIANTS[variant].get("env", {})}
        command = [sys.executable, __file__, "--flops-child", variant]
        command += ["--flops-steps", str(s["flops_steps"])]
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(
            Row(
                "3 flops",
                f"GFLOP/s, ResNet-20 32x32x3 training, batch 128, {variant}",
                "achieved",
                result["achieved"] / 1e9,
                "matmul peak",
                result["peak"] / 1e9,
                note=f"{result['per_image'] / 1e6:.0f} MFLOP/image (3x forward)",
            )
        )
    return rows


# ---------------------------------------------------------------- the default study


def part_study(s: dict) -> list[Row]:
    from bench_sweep import LAUNCHERS, run_study

    extra = [f"trainer.epochs={s['study_epochs']}"]
    if s["study_depths"]:
        extra.append(f"model.depth={s['study_depths']}")
    log(f"study: depth_sweep {' '.join(extra)}, sequential vs parallel")
    times = interleaved(
        {
            name: (lambda launch=launcher: run_study("depth_sweep", extra, launch))
            for name, launcher in LAUNCHERS.items()
        },
        1,
        log,
    )
    jobs = "12 jobs" if not s["study_depths"] else f"depths {s['study_depths']} x 2"
    row = ratio_row(
        "4 study",
        f"default study, {jobs}, {s['study_epochs']} ep",
        times,
        "parallel (joblib)",
        "sequential",
    )
    if s["study_epochs"] == 15 and not s["study_depths"]:
        row.target = "parallel <= 240 s"
    return [row]


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

        times = interleaved(
            {
                "batched SQL load": lambda: regenerate("sql"),
                "per-metric client": lambda: regenerate("client"),
            },
            1,
            log,
        )
    return [
        ratio_row(
            "5 figures",
            f"regenerate figures + report, {runs} runs x {epochs} ep",
            times,
            "batched SQL load",
            "per-metric client",
            note=f"store logged in {logged:.0f} s",
        )
    ]


# ---------------------------------------------------------------- main


def machine() -> str:
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
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
    for key, value in FULL.items():  # every setting can be overridden; None: the mode's value
        flag = "--" + key.replace("_", "-")
        about = f"{SETTINGS_HELP[key]} (quick: {QUICK[key]}, full: {value})"
        if isinstance(value, list):
            parser.add_argument(flag, nargs="+", type=type(value[0]), default=None, help=about)
        else:
            parser.add_argument(flag, type=type(value), default=None, help=about)
    parser.add_argument("--flops-child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parse_args(argv)
    settings = {
        k: getattr(args, k) if getattr(args, k) is not None else v
        for k, v in (QUICK if args.quick else FULL).items()
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
