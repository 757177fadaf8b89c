"""Links into MLflow's UI that open a study in Model training mode.

MLflow 3's UI opens an experiment in its GenAI mode (an empty Traces page) unless
told otherwise; `?workflowType=machine_learning` on an experiment or run route
opens the runs table instead. The `mlflow.experimentKind` tag we set on every
experiment should do the same, but some UI versions ignore it (mlflow/mlflow#24498).
"""

from __future__ import annotations

from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from resnet_exp import contract

MODEL_TRAINING = "workflowType=machine_learning"


def experiment_url(base: str, experiment_id: str) -> str:
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}?{MODEL_TRAINING}"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{MODEL_TRAINING}"


def study_links(client: MlflowClient, base: str) -> list[str]:
    """One line per experiment with runs, newest first: its URL and its latest sweep's."""
    lines = []
    experiments = client.search_experiments(
        view_type=ViewType.ACTIVE_ONLY, order_by=["last_update_time DESC"]
    )
    for exp in experiments:
        runs = client.search_runs([exp.experiment_id], max_results=1)
        if not runs:
            continue
        lines.append(f"{exp.name}: {experiment_url(base, exp.experiment_id)}")
        sweeps = client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.{contract.RUN_KIND} = '{contract.SWEEP}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if sweeps:
            sweep = sweeps[0]
            url = run_url(base, exp.experiment_id, sweep.info.run_id)
            lines.append(f"  latest sweep ({sweep.info.run_name}, findings + report): {url}")
    return lines
