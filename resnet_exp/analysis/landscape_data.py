"""Curvature and loss-landscape numbers of a study's runs, read back from MLflow (issue 18).

The training side (`resnet_exp.recording.curvature_recorder`, `resnet_exp.recording.landscape`)
logs per run the Hessian's top eigenvalue and trace (metrics at step 0, every
`curvature.every` epochs and the last step; `curvature.csv` adds how batch norm ran and
whether power iteration converged), and around the trained weights the loss along one
filter-normalised direction (`landscape_1d.csv`), over a plane (`landscape_2d.csv`), and
their sharpness and non-convex fraction (metrics, once). This module stacks them over a
study's runs (`load_landscape`) and into one row per configuration (`landscape_table`);
`landscape_report` reads them, `landscape_figures` draws them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from resnet_exp import contract
from resnet_exp.analysis.load import Study, load_run_artifacts, runs_artifact
from resnet_exp.analysis.summary import condition_columns, with_condition

# The section is drawn when a run logged one of these.
SECTION_METRICS = (
    contract.HESSIAN_TOP_EIG,
    contract.HESSIAN_TRACE,
    contract.LANDSCAPE_SHARPNESS,
    contract.LANDSCAPE_NONCONVEXITY,
)
_RUN_COLUMNS = ["run_id", "run_name", "model", "depth", "arch", "seed", "condition", "batch_norm"]
_CURVATURE = {  # metric -> column (curvature.csv's names)
    contract.HESSIAN_TOP_EIG: "top_eig",
    contract.HESSIAN_TRACE: "trace",
    contract.HESSIAN_TRACE_STDERR: "trace_stderr",
    contract.HESSIAN_BATCH_LOSS: "batch_loss",
}
_LANDSCAPE = {
    contract.LANDSCAPE_SHARPNESS: "sharpness",
    contract.LANDSCAPE_NONCONVEXITY: "nonconvexity",
    contract.LANDSCAPE_CENTRE_LOSS: "centre_loss",
}
_CSV_EXTRAS = ["bn_mode", "top_eig_converged"]  # what curvature.csv adds to the metrics
MEASURES = {  # per-run column -> its words in the findings
    "sharpness": "sharpness",
    "nonconvexity": "non-convex fraction",
    "top_eig_end": "top eigenvalue after training",
    "trace_end": "trace after training",
}


@dataclass
class LandscapeData:
    """Per-run curvature and landscape numbers, each row with the run's depth, arch, seed
    and condition."""

    curvature: pd.DataFrame  # one row per (run, measured epoch); bn_mode etc. where logged
    per_run: pd.DataFrame  # one row per run: *_init, *_end, sharpness, nonconvexity
    slices: pd.DataFrame  # landscape_1d.csv rows
    surfaces: pd.DataFrame  # landscape_2d.csv rows
    conditions: list[str]
    condition_columns: list[str] = field(default_factory=list)


def has_landscape_data(study: Study) -> bool:
    """True when some run logged curvature or landscape metrics (the section is drawn only
    then)."""
    return any(m in study.epochs.columns for m in SECTION_METRICS)


def load_landscape(study: Study) -> LandscapeData:
    """The curvature metrics of every usable run, its landscape numbers and artifacts."""
    columns = condition_columns(study.usable)
    runs = with_condition(study.usable, columns).reindex(columns=_RUN_COLUMNS)
    wanted = [*_CURVATURE, *_LANDSCAPE]
    ep = study.epochs.reindex(columns=study.epochs.columns.union(wanted, sort=False))

    curvature = ep.loc[ep[list(_CURVATURE)].notna().any(axis=1), ["run_id", "epoch", *_CURVATURE]]
    curvature = runs.merge(curvature.rename(columns=_CURVATURE), on="run_id")
    if not curvature.empty:
        csv = load_run_artifacts(
            study,
            contract.CURVATURE_ARTIFACT,
            {"epoch", *_CSV_EXTRAS},
            what="batch-norm mode and convergence notes of the curvature table",
        )
        if not csv.empty:
            csv = csv[["run_id", "epoch", *_CSV_EXTRAS]].astype({"epoch": "int64"})
            curvature = curvature.merge(csv, on=["run_id", "epoch"], how="left")
    curvature = curvature.reindex(columns=curvature.columns.union(_CSV_EXTRAS, sort=False))

    landscape = ep.loc[ep[contract.LANDSCAPE_SHARPNESS].notna(), ["run_id", "epoch", *_LANDSCAPE]]
    landscape = landscape.sort_values("epoch").drop_duplicates("run_id", keep="last")
    per_run = runs.merge(_init_and_end(curvature), on="run_id", how="left").merge(
        landscape.drop(columns="epoch").rename(columns=_LANDSCAPE), on="run_id", how="left"
    )
    per_run = per_run.dropna(subset=[*MEASURES, "top_eig_init"], how="all")

    slices = runs_artifact(
        study,
        runs,
        contract.LANDSCAPE_SHARPNESS,
        contract.LANDSCAPE_1D_ARTIFACT,
        contract.LANDSCAPE_1D_COLUMNS,
        what="landscape slices figure",
    )
    surfaces = runs_artifact(
        study,
        runs,
        contract.LANDSCAPE_NONCONVEXITY,
        contract.LANDSCAPE_2D_ARTIFACT,
        ["alpha", "beta", "loss"],
        what="landscape contours figure",
    )
    conditions = sorted(set(per_run["condition"])) if not per_run.empty else [""]
    return LandscapeData(curvature, per_run, slices, surfaces, conditions, columns)


def _init_and_end(curvature: pd.DataFrame) -> pd.DataFrame:
    """One row per run: the curvature columns at initialisation (`*_init`) and at its last
    measured epoch after it (`*_end`)."""
    values = ["top_eig", "trace", "trace_stderr", "batch_loss", "bn_mode", "top_eig_converged"]
    last = curvature.groupby("run_id")["epoch"].transform("max")
    init = curvature[curvature["epoch"] == 0].set_index("run_id")[values]
    end = curvature[(curvature["epoch"] == last) & (last > 0)].set_index("run_id")[values]
    both = init.add_suffix("_init").join(end.add_suffix("_end"), how="outer")
    return both.reset_index()


# ---------------------------------------------------------------- per-configuration numbers


def landscape_table(data: LandscapeData) -> pd.DataFrame:
    """One row per (condition, depth, arch): means over seeds, sds between them (`*_sd`,
    NaN with one seed), and the trace's standard error of that mean (`trace_end_se`)."""
    runs = data.per_run
    if runs.empty:
        return pd.DataFrame()
    keys = ["condition", "depth", "arch"]
    groups = runs.groupby(keys)
    table = groups.agg(seeds=("run_id", "nunique"))
    for column in ("top_eig_init", "trace_init", *MEASURES, "centre_loss"):
        table[column] = groups[column].mean()
        table[f"{column}_sd"] = groups[column].std(ddof=1)
    se = runs.assign(var=runs["trace_stderr_end"] ** 2).groupby(keys)["var"]
    table["trace_end_se"] = np.sqrt(se.sum(min_count=1)) / se.count()
    for when in ("init", "end"):  # False when some seed's estimate did not converge
        flags = runs.get(f"top_eig_converged_{when}", pd.Series(np.nan, index=runs.index))
        unconverged = runs.assign(no=flags.notna() & ~converged_flags(flags)).groupby(keys)["no"]
        table[f"top_eig_{when}_converged"] = ~unconverged.any()
    return table.reset_index()


def converged_flags(flags: pd.Series) -> pd.Series:
    """`top_eig_converged` as booleans, however the CSV reader typed it."""
    return flags.astype(str).str.lower().isin(["true", "1", "1.0"])
