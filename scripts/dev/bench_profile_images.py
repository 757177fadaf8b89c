"""What do the gradient-profile images cost? Their time beside the epoch's, one run.

Trains CIFAR ResNets on the digits with the real callbacks (epoch clock,
GradientRecorder, ProfileImageLogger) logging to a fresh SQLite store, and
prints, per depth, the median epoch (training + validation), the median step's
images (render with Agg, the image chart's `log_image`, and the copy under a name
that sorts, `grad_profile_epochs/epoch_NNN.png`), of which the copy, and their
ratio to the epoch; then the picture of every epoch drawn when training ends.
All are timed on the logger's worker thread, where the per-step ones overlap the
next epoch: the ratio is what they would cost if drawn on the training thread;
`fit` waits for the last step's images and the all-epochs picture. What they cost
a run is part 1 of `scripts/dev/bench.py` (the "on (step)" and "on (step, no
images)" rows).

    python scripts/dev/bench_profile_images.py --depths 20 56 --epochs 4
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import keras
from benchkit import steady
from mlflow.tracking import MlflowClient

from resnet_exp.config.schema import DataConfig, ModelConfig
from resnet_exp.data.splits import load_dataset, probe_batch
from resnet_exp.models import build_model
from resnet_exp.recording.gradients import GradientRecorder
from resnet_exp.recording.profile_images import ProfileImageLogger
from resnet_exp.tracking.run_log import RunLog
from resnet_exp.training.callbacks import EpochTimer


def one_depth(client: MlflowClient, experiment_id: str, data, depth: int, args) -> list[str]:
    keras.utils.set_random_seed(0)
    model = build_model(
        ModelConfig(name="resnet_cifar", depth=depth, residual=False),
        input_shape=data.input_shape,
        num_classes=10,
        seed=0,
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    run_id = client.create_run(experiment_id, run_name=f"d{depth}").info.run_id
    recorder = GradientRecorder(*probe_batch(data, 64, 0))
    images = ProfileImageLogger.from_recorder(
        RunLog(client, run_id), recorder, label=f"d{depth}-plain"
    )
    fit = model.fit(
        data.x_train,
        data.y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=(data.x_val, data.y_val),
        callbacks=[EpochTimer(), recorder, images],  # the timer first: epochs without the image
        verbose=0,
    )
    client.set_terminated(run_id)
    epoch = steady(fit.history["epoch_time_s"])
    image = statistics.median(images.seconds)
    return [
        str(depth),
        str(len(recorder.layer_names)),
        f"{1000 * epoch:.0f}",
        f"{1000 * image:.0f}",
        f"{1000 * statistics.median(images.copy_seconds):.0f}",
        f"{100 * image / epoch:.1f}",
        f"{1000 * images.all_epochs_seconds:.0f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 56])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    data = load_dataset(DataConfig(name="digits"), seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        client = MlflowClient(f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        experiment_id = client.create_experiment("bench", artifact_location=str(Path(tmp) / "a"))
        rows = [one_depth(client, experiment_id, data, d, args) for d in args.depths]
    head = ["depth", "layers", "epoch ms", "step's images ms", "of which copy ms"]
    for row in [[*head, "images/epoch %", "all epochs ms"], *rows]:
        print(" | ".join(row))


if __name__ == "__main__":
    main()
