"""The sweeper's config schema, `hydra/sweeper=study` (conf/config.yaml selects it), registered
where Hydra's own plugins register theirs, so Hydra finds it while it scans for plugins."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class StudySweeperConf:
    _target_: str = "hydra_plugins.resnet_exp_sweeper.StudySweeper"
    max_batch_size: int | None = None  # Hydra's basic sweeper's key; every job is one batch
    params: dict[str, str] | None = None  # key: comma-separated values, as on the command line
    # combinations of the product to leave out: each a {key: value} that a job matches when
    # it sets every key to that value (e.g. {model.batch_norm: true, model.residual_init: fixup})
    exclude: list[dict[str, Any]] = field(default_factory=list)


ConfigStore.instance().store(
    group="hydra/sweeper", name="study", node=StudySweeperConf, provider="resnet_exp"
)
