"""Links into MLflow's UI that open a study in Model training mode, on its finding.

MLflow 3's UI opens an experiment in its GenAI mode (an empty Traces page) unless
told otherwise; `?workflowType=machine_learning` on an experiment or run route
opens the runs table instead. The `mlflow.experimentKind` tag we set on every
experiment should do the same, but some UI versions ignore it (mlflow/mlflow#24498).

A study's saved view (`save_study_view`, its link `view_url`) opens it on the finding:
plain vs residual across depth in the runs table's columns and the first charts.
"""

from __future__ import annotations

import logging
import time

from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from resnet_exp import compat, contract
from resnet_exp.tracking.store import with_retry

log = logging.getLogger(__name__)

MODEL_TRAINING = "workflowType=machine_learning"


def experiment_url(base: str, experiment_id: str) -> str:
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}?{MODEL_TRAINING}"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{MODEL_TRAINING}"


def study_links(client: MlflowClient, base: str, save_views: bool = False) -> list[str]:
    """Lines per experiment with runs, newest first: its URL; its latest sweep's finding
    (the saved view's charts and table) and parent run. `save_views`: first give the
    latest sweep (else the experiment) its summaries and view where they are missing
    (`prepare_study`), so that studies logged before them open on the finding too."""
    lines = []
    experiments = client.search_experiments(
        view_type=ViewType.ACTIVE_ONLY, order_by=["last_update_time DESC"]
    )
    for exp in experiments:
        runs = client.search_runs([exp.experiment_id], max_results=1)
        if not runs:
            continue
        eid = exp.experiment_id
        lines.append(f"{exp.name}: {experiment_url(base, eid)}")
        sweeps = client.search_runs(
            [eid],
            filter_string=f"tags.{contract.RUN_KIND} = '{contract.SWEEP}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        sweep = sweeps[0] if sweeps else None
        sweep_id = sweep.data.tags.get(contract.SWEEP_ID) if sweep else None
        if save_views:
            prepare_study(client, eid, sweep_id)
        key = study_view_key(sweep_id)
        if key in saved_view_keys(client, eid):
            which = f"latest sweep, {sweep.info.run_name}" if sweep else "all runs"
            lines.append(f"  the finding ({which}), charts: {view_url(base, eid, key)}")
            lines.append(f"  the finding, table: {view_url(base, eid, key, charts=False)}")
        if sweep:
            url = run_url(base, eid, sweep.info.run_id)
            lines.append(f"  latest sweep ({sweep.info.run_name}, findings + report): {url}")
    return lines


def prepare_study(client: MlflowClient, experiment_id: str, sweep_id: str | None) -> int:
    """Log the summaries of the study's FINISHED training runs that lack them, and save its
    view if it has none; returns how many runs got summaries. A store that refuses the
    writes (a lab server user without EDIT) is left as it is."""
    from resnet_exp.tracking.summaries import log_run_summary

    query = f"{training_runs_filter(sweep_id)} and attributes.status = 'FINISHED'"
    runs = with_retry(client.search_runs, [experiment_id], query, max_results=50000)
    done = 0
    try:
        for run in runs:
            if contract.INIT_GRAD_RATIO not in run.data.metrics and (
                contract.DEPTH_METRIC not in run.data.metrics
            ):
                log_run_summary(client, run.info.run_id)
                done += 1
        if runs and study_view_key(sweep_id) not in saved_view_keys(client, experiment_id):
            save_study_view(client, experiment_id, sweep_id)
    except MlflowException as err:
        log.warning("could not save the study's view in %s: %s", experiment_id, err.message[:200])
    return done


# ---------------------------------------------------------------- a study's saved view
#
# The finding, plain vs residual across depth, in the runs table and the first charts:
# a shared view (its format: `resnet_exp.compat`, MLflow UI section) with the summaries
# `tracking.summaries.log_run_summary` logs as columns, the rows in depth order, only the
# study's training runs, every run plotted, and a first chart section "Finding".

FINDING_SECTION = "Finding"
FINDING_COLUMNS = (
    compat.ui_column("metrics", contract.DEPTH_METRIC),
    compat.ui_column("tags", contract.ARCH),
    compat.ui_column("metrics", contract.INIT_GRAD_RATIO),
    compat.ui_column("metrics", contract.FINAL_TRAIN_ERROR),
    compat.ui_column("metrics", contract.FINAL_VAL_ERROR),
)
FINDING_BARS = (contract.INIT_GRAD_RATIO, contract.FINAL_TRAIN_ERROR, contract.FINAL_VAL_ERROR)


def study_view_key(sweep_id: str | None) -> str:
    """The view's key: one per sweep (`finding-<sweep id>`), or `finding` for the whole
    experiment."""
    return f"finding-{sweep_id}" if sweep_id else "finding"


def training_runs_filter(sweep_id: str | None) -> str:
    """The search filter for a study's training runs (no sweep parent, no report run)."""
    query = f"tags.{contract.RUN_KIND} = '{contract.TRAIN}'"
    return f"{query} and tags.{contract.SWEEP_ID} = '{sweep_id}'" if sweep_id else query


def study_view_state(sweep_id: str | None, with_test: bool = False) -> dict:
    """The runs page's state for a study: finding columns, depth order, its training runs
    only, all plotted; charts: bars of the summaries, the ratio per epoch (log y), depth vs
    the ratio at initialisation, then the gradient-profile images."""
    section = f"finding-{sweep_id or 'all'}"
    bars = list(FINDING_BARS) + ([contract.FINAL_TEST_ERROR] if with_test else [])
    charts = [compat.ui_bar_chart(f"{section}-{key}", section, key) for key in bars]
    charts.append(
        compat.ui_line_chart(
            f"{section}-{contract.GRAD_RATIO}",
            section,
            contract.GRAD_RATIO,
            title=f"{contract.GRAD_RATIO} per epoch (log)",
            log_y=True,
        )
    )
    # depth against the ratio at initialisation, a point per run: the finding in one chart
    charts.append(
        compat.ui_scatter_chart(
            f"{section}-depth-{contract.INIT_GRAD_RATIO}",
            section,
            contract.DEPTH_METRIC,
            contract.INIT_GRAD_RATIO,
        )
    )
    # each run's gradient profile per epoch, without the parameter lines over the image
    charts.append(
        compat.ui_image_chart(
            f"{section}-{contract.PROFILE_IMAGE}", section, contract.PROFILE_IMAGE
        )
    )
    return compat.ui_view_state(
        search_filter=training_runs_filter(sweep_id),
        order_by=compat.ui_column("metrics", contract.DEPTH_METRIC),
        ascending=True,
        columns=list(FINDING_COLUMNS),
        section=(section, FINDING_SECTION),
        charts=charts,
    )


def save_study_view(client: MlflowClient, experiment_id: str, sweep_id: str | None) -> str:
    """Save (or replace) the study's view as an experiment tag; returns its key, for
    `view_url`. `sweep_id` None: every training run of the experiment."""
    with_test = f"{training_runs_filter(sweep_id)} and metrics.{contract.FINAL_TEST_ERROR} >= 0"
    runs = with_retry(client.search_runs, [experiment_id], with_test, max_results=1)
    key = study_view_key(sweep_id)
    name = f"Finding, sweep-{sweep_id[:6]}" if sweep_id else "Finding, all runs"
    state = study_view_state(sweep_id, with_test=bool(runs))
    tag, value = compat.ui_view_tag(key, name, state, int(time.time() * 1000))
    with_retry(client.set_experiment_tag, experiment_id, tag, value)
    return key


def view_url(base: str, experiment_id: str, key: str, charts: bool = True) -> str:
    """The link that opens a saved view: its charts (default) or its runs table. It carries
    no other facet of the page: with one, the UI ignores the view."""
    mode = "CHART" if charts else "TABLE"
    query = f"{compat.UI_VIEW_URL_KEY}={key}&compareRunsMode={mode}&{MODEL_TRAINING}"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def saved_view_keys(client: MlflowClient, experiment_id: str) -> list[str]:
    """The keys of the experiment's saved views."""
    tags = with_retry(client.get_experiment, experiment_id).tags
    prefix = compat.UI_VIEW_TAG_PREFIX
    return [k.removeprefix(prefix) for k in tags if k.startswith(prefix)]
