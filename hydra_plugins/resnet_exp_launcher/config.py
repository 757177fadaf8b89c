"""The SLURM launcher's config schema, `study_slurm`: hydra-submitit's `submitit_slurm` and the
keys of the bounded wait (`resnet_exp.run.cluster`). conf/hydra/launcher/slurm.yaml builds
the `slurm` preset on it."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf


@dataclass
class StudySlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.resnet_exp_launcher.StudySlurmLauncher"
    # a job Slurm no longer lists (or lists ended) without a result after this long is lost:
    # counted as failed (the time a shared filesystem may take to show its result file)
    lost_after_s: float = 60
    # a job PENDING this long is told with Slurm's reason; a reason no wait can satisfy
    # (PartitionConfig: it asks for more than the nodes have) cancels it, counted as failed
    pending_after_s: float = 60
    # seconds between two looks at the jobs (one squeue call for the whole array)
    poll_s: float = 5


ConfigStore.instance().store(
    group="hydra/launcher", name="study_slurm", node=StudySlurmConf, provider="resnet_exp"
)
