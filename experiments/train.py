"""Train one configured network, or a sweep of them with `-m`, logging to MLflow.

python experiments/train.py model.depth=56 model.residual=false
python experiments/train.py -m model.depth=8,20,56 model.residual=true,false
python experiments/train.py experiment=depth_sweep      # a study preset is a sweep by itself
"""

from __future__ import annotations

import os
import sys

from resnet_exp.run.quiet import quiet_tensorflow

quiet_tensorflow()  # before anything imports TensorFlow

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from resnet_exp.config.schema import INJECTED_OVERRIDES, register_configs  # noqa: E402
from resnet_exp.data.files import DatasetUnavailable  # noqa: E402
from resnet_exp.run.command_line import validate_or_exit  # noqa: E402

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig):
    from resnet_exp.run.job import run_job  # MLflow and TensorFlow load only for a valid config

    quiet_tensorflow()  # again: a parallel launcher's workers do not run this module's top
    hydra_cfg = HydraConfig.get()
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    overrides = [o for o in hydra_cfg.overrides.task if not o.startswith(INJECTED_OVERRIDES)]
    try:
        return run_job(cfg, overrides=overrides, raise_errors=not in_sweep)
    except DatasetUnavailable as err:  # the run is closed FAILED; say why in one line
        print(f"data error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    # one job, or a sweep's first: the sweeper composes and checks every job of a sweep
    launch = validate_or_exit(every_job=False)
    from resnet_exp.tracking.preflight import StoreGone, stores_or_exit

    if launch is not None:
        stores_or_exit(launch.jobs)  # a dead store: one line now, not minutes of retries later
        if not launch.multirun:  # the sweeper checks the data of every job of a sweep
            from resnet_exp.data.check import check_jobs_data_or_exit

            check_jobs_data_or_exit(launch.jobs)  # bad data: one line, and no run left behind
    try:
        main()
    except StoreGone as gone:  # said in one line; skip a teardown TensorFlow can abort
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(gone.code)
