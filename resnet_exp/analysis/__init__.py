"""Read a depth study back from MLflow and turn it into figures and a report.

    from resnet_exp.analysis import load_study, load_grad_profiles
    study = load_study("resnet-exp", parent_run_id=None)   # tidy frames + notes
    study.epochs      # a row per (run, epoch); epoch 0 = initialisation
    study.runs        # a row per run: typed params, status, diverged, tags

The figures and report.md come from `python scripts/make_figures.py`
(`resnet_exp.analysis.command`). Modules: `load` (MLflow -> pandas), `summary`
(final numbers and means over seeds), `figures`, `report` (with `reference`,
published numbers beside a study's own), `mlflow_report` (the report as MLflow's
UI shows it), `command`, and `lesion_report` / `lesion_figures` (block lesions
and branch magnitudes, when logged). The names of what runs log come from
`resnet_exp.contract`; a fake study written to that contract, for tests and
benchmarks, is `tests/fake_study.py`.
"""

from resnet_exp.analysis.load import (
    Study,
    StudyError,
    load_grad_profiles,
    load_study,
    resolve_tracking_uri,
)
from resnet_exp.analysis.summary import run_finals, summarise

__all__ = [
    "Study",
    "StudyError",
    "load_grad_profiles",
    "load_study",
    "resolve_tracking_uri",
    "run_finals",
    "summarise",
]
