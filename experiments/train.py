"""Train one configured network, or a sweep of them with `-m`, logging to MLflow.

python experiments/train.py model.depth=56 model.residual=false
python experiments/train.py -m model.depth=8,20,56 model.residual=true,false
python experiments/train.py -m experiment=depth_sweep
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from resnet_exp.cli import validate_or_exit
from resnet_exp.config import INJECTED_OVERRIDES, register_configs
from resnet_exp.datasets import DatasetUnavailable

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig):
    from resnet_exp.job import run_job  # MLflow and TensorFlow load only for a valid config

    hydra_cfg = HydraConfig.get()
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    overrides = [o for o in hydra_cfg.overrides.task if not o.startswith(INJECTED_OVERRIDES)]
    try:
        return run_job(cfg, overrides=overrides, raise_errors=not in_sweep)
    except DatasetUnavailable as err:  # the run is closed FAILED; say why in one line
        print(f"data error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    validate_or_exit()
    main()
