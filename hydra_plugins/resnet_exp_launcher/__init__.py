"""Where Hydra finds the project's SLURM launcher: Hydra loads launchers only from the
`hydra_plugins` namespace package. The launcher itself is `resnet_exp.run.cluster`."""

from resnet_exp.run import cluster


class StudySlurmLauncher(cluster.StudySlurmLauncher):
    """`resnet_exp.run.cluster.StudySlurmLauncher`, under the name Hydra accepts."""
