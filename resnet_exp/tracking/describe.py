"""What MLflow's UI shows about a study besides numbers: descriptions, params, provenance.

A run's params are the settings that apply to its model and optimiser (a `resnet_cifar`
run has no `model.width`); the resolved config stays whole in the `config.yaml` artifact.
Descriptions (`mlflow.note.content`): the experiment's, shown as the UI's banner, says what
the study asks and how to read it there; each training run gets one line.
"""

from __future__ import annotations

import functools
import getpass
import logging
import os
import subprocess
from collections.abc import Callable
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from resnet_exp.contract import NOTE
from resnet_exp.tracking.naming import arch, run_name, skip_placement
from resnet_exp.tracking.store import project_root, with_retry

log = logging.getLogger(__name__)


EXPERIMENT_KIND = "mlflow.experimentKind"
CLASSIC_TRAINING = "custom_model_development"  # MLflow's marker for model-training experiments
ENTRY_POINT = "experiments/train.py"

# A param applies only when its predicate on the flat config holds.
_APPLIES: dict[str, Callable[[dict[str, Any]], bool]] = {
    "model.width": lambda c: c.get("model.name") in ("mlp", "vgg"),
    "model.blocks_per_stage": lambda c: c.get("model.name") == "resnet_basic",
    "model.convs_per_stage": lambda c: c.get("model.name") == "vgg",
    "model.shortcut": lambda c: c.get("model.name") != "mlp",
    "model.base_filters": lambda c: c.get("model.name") != "mlp",
    "optim.momentum": lambda c: c.get("optim.name") == "sgd",
    "optim.nesterov": lambda c: c.get("optim.name") == "sgd",
    "optim.schedule.milestones": lambda c: c.get("optim.schedule.name") == "step",
    "optim.schedule.gamma": lambda c: c.get("optim.schedule.name") == "step",
}
_BOOKKEEPING = ("tracking.",)

# The experiments list shows the description's start as it is (markdown unrendered), cut
# at about 26 characters in MLflow 3.17: a plain sentence whose first words say it all.
EXPERIMENT_DESCRIPTION = """\
Plain vs residual by depth: what skip connections do to a network as it gets deeper.

Each run trains one network, plain (no skip connections) or residual, at one depth, and \
records the loss gradient at its first and last weight layers at initialisation (step 0) \
and after every epoch.

**Reading it here** (sidebar: *Model training*):
- **The finding at a glance**: *Views* (top right) > *Finding, sweep-...* (`make ui` prints \
the link): the training runs in depth order with their depth, kind (`arch`), first/last \
gradient ratio at initialisation and final train/val errors, and a first chart section \
*Finding* (plain nets red, residual blue, darker as they deepen).
- A sweep is one row: expand it to see its runs, named `d<depth>-<kind>` \
(plus what else the sweep varies, e.g. `nobn`, `s1` for seed 1). The kind is `plain`, \
`residual` (a skip on every block), `skip@<blocks>` (skips only on the blocks named, as \
`lesion.csv` names them; the tag `skip_at` lists them), with `-skipinit` or `-fixup` \
when the residual branches start that way instead of from the standard initialisation.
- *Chart view*: group by the tag `arch` to colour plain against residual; \
`grad_first_last_ratio` (first over last layer's gradient norm), `train_accuracy`, \
`val_accuracy`, `train_loss` per epoch.
- A run's image chart `grad_profile` shows the gradient norm of every layer; its step \
slider moves through the epochs.
- The sweep's parent run: its description holds the findings and the summary table, its \
artifacts `report/` the report and figures, once `python scripts/make_figures.py \
--experiment {experiment}` has run.
- Filter runs with e.g. `tags.arch = 'plain' and tags.depth = '56'`.
"""


def applicable_params(flat: dict[str, Any]) -> dict[str, Any]:
    """The flat config less bookkeeping and the keys its model or optimiser ignores."""
    return {
        key: value
        for key, value in flat.items()
        if not key.startswith(_BOOKKEEPING) and _APPLIES.get(key, lambda c: True)(flat)
    }


def run_description(cfg: DictConfig) -> str:
    """One line: what this run trains, on what, how long."""
    m, o = cfg.model, cfg.optim
    placement = skip_placement(m)
    skips = {"all": "skip connections on every block", "none": "no skip connections"}.get(
        placement, f"skip connections on {placement.replace(',', ', ')} only"
    )
    init = str(getattr(m, "residual_init", None) or "standard")
    if init != "standard":
        skips += {"skipinit": ", SkipInit", "fixup": ", Fixup"}.get(init, f", {init}")
        skips += " initialisation"
    bn = "batch norm" if m.batch_norm else "no batch norm"
    steps = cfg.trainer.steps
    length = f"{steps} iterations" if steps else f"{cfg.trainer.epochs} epochs"
    return (
        f"`{run_name(cfg)}`: {arch(m)} {m.name} of depth {m.depth} ({skips}, {bn}, "
        f"{m.activation}), {length} on {cfg.data.name}, "
        f"{o.name} lr {o.lr}, seed {cfg.seed}."
    )


def sweep_description(experiment: str, overrides: list[str]) -> str:
    """The parent's description until make_figures replaces it with the findings."""
    swept = " ".join(f"`{o}`" for o in overrides) or "(no overrides)"
    return (
        f"Sweep of {swept}. Expand this row to see its runs. The findings and the "
        f"summary table appear here once `python scripts/make_figures.py --experiment "
        f"{experiment}` has run."
    )


def provenance_tags(source_name: str = ENTRY_POINT) -> dict[str, str]:
    """MLflow's system tags for who ran what from which commit, as its fluent API sets them
    (`MlflowClient.create_run` sets none): the user is the tracking login when there is one
    (a lab server's `MLFLOW_TRACKING_USERNAME`), else the account's name."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or getpass.getuser()
    tags = {"mlflow.user": user, "mlflow.source.type": "LOCAL", "mlflow.source.name": source_name}
    commit = _git_commit()
    return {**tags, "mlflow.source.git.commit": commit} if commit else tags


@functools.cache
def _git_commit() -> str | None:
    """The checkout's commit, or None outside a git checkout or without git."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=project_root(),
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def describe_experiment(client: MlflowClient, experiment_id: str, name: str) -> None:
    """Give the experiment its description and training-mode marker, unless it has them.

    A description a user edited in the UI is kept.
    """
    tags = with_retry(client.get_experiment, experiment_id).tags
    wanted = {
        NOTE: EXPERIMENT_DESCRIPTION.format(experiment=name),
        EXPERIMENT_KIND: CLASSIC_TRAINING,
    }
    for key, value in wanted.items():
        if key in tags:
            continue
        try:
            with_retry(client.set_experiment_tag, experiment_id, key, value)
        except MlflowException as err:  # e.g. a lab server user without EDIT on it: no matter
            log.warning("could not set %s on experiment %s: %s", key, name, err.message[:200])
