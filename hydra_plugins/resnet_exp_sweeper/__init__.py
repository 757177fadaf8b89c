"""Where Hydra finds the project's sweeper: Hydra loads sweepers only from the
`hydra_plugins` namespace package. The sweeper itself is `resnet_exp.run.sweep`."""

from resnet_exp.run import sweep


class StudySweeper(sweep.StudySweeper):
    """`resnet_exp.run.sweep.StudySweeper`, under the name Hydra accepts."""
