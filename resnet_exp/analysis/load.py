"""Read a study back from MLflow into pandas.

A study is the training runs of one experiment, optionally only the children of
one sweep's parent run. `load_study` returns them as one tidy frame with a row
per (run, epoch), plus a frame with a row per run, so that figures and the
report never talk to MLflow themselves.

Metric histories are the expensive part. MLflow's public client reads them one
(run, key) at a time (`MlflowClient.get_metric_history`); the loader does that,
`HISTORY_WORKERS` calls at a time, for every store without a batched path. Two
batched paths live in `resnet_exp.compat` (they use MLflow's private parts; the
savings are measured there): SQL stores (``sqlite:///``, ``postgresql://``, ...)
read MLflow's ``metrics`` table directly (13x), tracking servers (``http(s)://``)
their bulk endpoints (4.5x). Anything else (a ``./mlruns`` file store,
Databricks) reads through the client, and so does a store where a batched path
fails (with a note). `method=` forces a path ("sql", "rest", "client"), for
benchmarks and for when a store misbehaves. SQL stores keep +/-inf as +/-float
max, and every path hands that back; it is mapped to +/-inf here.

Params arrive as strings; the config keys in `PARAM_COLUMNS` become typed
columns. Runs are never dropped silently: FAILED, KILLED and RUNNING
runs stay in `Study.runs` with their status, diverged runs keep their metrics up
to divergence, and everything the loader skips is named in `Study.notes`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from resnet_exp import compat, contract
from resnet_exp.tracking import store as tracking

# MLflow param (dotted config key) -> (column, type). Missing params become NA.
PARAM_COLUMNS: dict[str, tuple[str, str]] = {
    "model.name": ("model", "str"),
    "model.depth": ("depth", "int"),
    "model.residual": ("residual", "bool"),
    "model.batch_norm": ("batch_norm", "bool"),
    "model.activation": ("activation", "str"),
    "model.shortcut": ("shortcut", "str"),
    "model.width": ("width", "int"),
    "model.base_filters": ("base_filters", "int"),
    "data.name": ("dataset", "str"),
    "data.num_classes": ("num_classes", "int"),
    "optim.name": ("optimizer", "str"),
    "optim.lr": ("lr", "float"),
    "optim.weight_decay": ("weight_decay", "float"),
    "optim.schedule.name": ("schedule", "str"),
    "trainer.epochs": ("epochs", "int"),
    "trainer.batch_size": ("batch_size", "int"),
    "seed": ("seed", "int"),
}
TAG_COLUMNS = {
    contract.GIT_COMMIT: "git_commit",
    contract.CONFIG_HASH: "config_hash",
    contract.SWEEP_ID: "sweep_id",
    contract.OVERRIDES: "overrides",
    contract.PARENT: "parent_run_id",
    contract.ARCH: "arch_tag",
    contract.SKIP_AT: "skip_at",
}
# A run with either has gradient metrics.
GRADIENT_NORMS = (contract.GRAD_FIRST, contract.GRAD_LAST)
# Metric keys that would collide with a param column get another name.
METRIC_RENAMES = {contract.LEARNING_RATE: "epoch_lr"}
# Statuses of runs whose numbers are final; diverged runs count whatever their status.
DONE = "FINISHED"
UNFINISHED = ("RUNNING", "SCHEDULED")
BROKEN = ("FAILED", "KILLED")
# URI scheme -> batched history path; every other scheme reads through the client.
_METHODS = {
    **dict.fromkeys(("sqlite", "postgresql", "mysql", "mssql"), "sql"),
    **dict.fromkeys(("http", "https"), "rest"),
}
_FLOAT_MAX = 1.7976931348623157e308
HISTORY_WORKERS = 8  # concurrent MLflow calls: history reads, server requests, downloads


class StudyError(Exception):
    """Nothing to analyse (unknown or empty experiment, unknown parent run); one-line message."""


@dataclass
class Study:
    """One study as read from MLflow.

    `runs`: a row per training run (typed params, status, diverged, tags).
    `epochs`: a row per (run, epoch) with the run's columns and every metric;
    epoch 0 is initialisation (gradients only), 1..E the end of each epoch.
    `params`: every param of every run as logged (strings), for anything not
    in `PARAM_COLUMNS`.
    """

    experiment: str
    experiment_id: str
    tracking_uri: str
    parent_run_id: str | None
    runs: pd.DataFrame
    epochs: pd.DataFrame
    params: pd.DataFrame
    parent_run_name: str | None = None
    sweep_parents: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    method: str = ""
    seconds: float = 0.0

    @property
    def usable(self) -> pd.DataFrame:
        """Runs whose numbers are final: FINISHED, or diverged (whatever their status)."""
        return self.runs[self.runs["usable"]]


def resolve_tracking_uri(uri: str | None = None) -> str:
    """An explicit `uri` (a reader's --tracking-uri) wins; else the training side's rule."""
    return uri or tracking.resolve_tracking_uri(None)


def _scheme(uri: str) -> str:
    return urlparse(uri).scheme.split("+")[0].lower()


def pick_method(uri: str) -> str:
    """How to read this store's metric histories: "sql", "rest" (batched, in `compat`) or
    "client" (the public path, for every other store)."""
    return _METHODS.get(_scheme(uri), "client")


def _sqlite_path_exists(uri: str) -> bool:
    if _scheme(uri) != "sqlite":
        return True
    path = uri.partition(":///")[2]
    return path in ("", ":memory:") or Path(path).exists()


# ---------------------------------------------------------------- runs


def _search_all_runs(client: MlflowClient, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=filter_string,
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=50_000,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
# kind -> (dtype of a complete column, dtype of one with values missing)
_DTYPES = {
    "int": ("int64", "Int64"),
    "float": ("float64", "float64"),
    "bool": ("bool", "boolean"),
    "str": ("object", "object"),
}


def _parse(value: str | None, kind: str):
    """A param or tag string as `kind`; None when missing or unreadable."""
    if value is None or value in ("None", "null", ""):
        return None
    try:
        if kind == "int":
            return int(float(value))
        if kind == "float":
            return float(value)
    except ValueError:
        return None
    return _BOOLS.get(value.strip().lower()) if kind == "bool" else value


def _typed(frame: pd.DataFrame, column: str, kind: str) -> None:
    """Give `column` a numpy dtype when complete, a nullable one when values are missing."""
    plain, nullable = _DTYPES[kind]
    frame[column] = frame[column].astype(plain if frame[column].notna().all() else nullable)


def _runs_frame(runs: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(a row per run, params parsed; every param of every run as logged, by run_id)."""
    rows = [
        {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "status": run.info.status,
            "start_time": pd.to_datetime(run.info.start_time, unit="ms", utc=True),
            "artifact_uri": run.info.artifact_uri,
            "run_kind": run.data.tags.get(contract.RUN_KIND),
            **{
                column: _parse(run.data.params.get(key), kind)
                for key, (column, kind) in PARAM_COLUMNS.items()
            },
            **{column: run.data.tags.get(tag) for tag, column in TAG_COLUMNS.items()},
            "diverged": str(run.data.tags.get(contract.DIVERGED, "false")).lower() == "true",
            "diverged_epoch": _parse(run.data.tags.get(contract.DIVERGED_EPOCH), "int"),
            "has_gradients": any(k in run.data.metrics for k in GRADIENT_NORMS),
            # the one-number summaries are derived from the per-epoch metrics read here, and
            # `depth`/`diverged` would collide with the tags of the same names
            "metric_keys": tuple(
                sorted(k for k in run.data.metrics if k not in contract.SUMMARY_METRICS)
            ),
        }
        for run in runs
    ]
    params = {run.info.run_id: dict(run.data.params) for run in runs}
    return pd.DataFrame(rows), pd.DataFrame.from_dict(params, orient="index").rename_axis("run_id")


def _training_runs(frame: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Keep training runs: run_kind "train", or untagged runs that carry a model depth."""
    kind = frame["run_kind"]
    frame = frame[kind.isna() | (kind == contract.TRAIN)]  # not sweep parents nor report runs
    no_depth = frame[frame["depth"].isna()]
    if len(no_depth):
        notes.append(
            f"{len(no_depth)} run(s) without a model.depth param are not training runs of "
            f"this project and were left out: {', '.join(no_depth['run_name'].astype(str)[:5])}"
        )
    return frame[frame["depth"].notna()].copy()


# ---------------------------------------------------------------- histories


def _in_parallel(fn: Callable, args: list[tuple], workers: int) -> list:
    """`fn(*a)` for each `a` in `args`, `workers` at a time, in order."""
    with ThreadPoolExecutor(max(1, min(workers, len(args)))) as pool:
        return list(pool.map(lambda a: fn(*a), args))


def _history_client(
    client: MlflowClient, run_keys: dict[str, Iterable[str]], workers: int = HISTORY_WORKERS
) -> pd.DataFrame:
    """The public path: one `get_metric_history` call per (run, key), `workers` at a time."""
    pairs = [(run_id, key) for run_id, keys in run_keys.items() for key in keys]

    def fetch(run_id: str, key: str) -> list[tuple]:
        return [
            (run_id, key, m.step, m.value, m.timestamp)
            for m in client.get_metric_history(run_id, key)
        ]

    rows = [row for result in _in_parallel(fetch, pairs, workers) for row in result]
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value", "timestamp"])


def fetch_histories(
    client: MlflowClient,
    uri: str,
    run_keys: dict[str, Sequence[str]],
    method: str = "auto",
    notes: list[str] | None = None,
    steps_hint: int = 1000,
    workers: int = HISTORY_WORKERS,
) -> tuple[pd.DataFrame, str]:
    """Every logged point of every metric of the given runs, long format.

    Returns (frame with run_id, key, step, value, timestamp; the method used).
    `steps_hint` (the most epochs a run has, plus one) sizes the server's batches.
    A batched path that fails falls back to the client path, with a note.
    """
    method = pick_method(uri) if method == "auto" else method
    run_ids = list(run_keys)
    keys = sorted({k for ks in run_keys.values() for k in ks})
    long = None
    try:
        if method == "sql":
            long = compat.metric_histories_sql(uri, run_ids)
        elif method == "rest":
            long = compat.metric_histories_server(client, run_ids, keys, steps_hint, workers)
    except Exception as err:  # a store we did not expect: the public path still works
        if notes is not None:
            first = str(err).partition("\n")[0][:120]
            notes.append(
                f"batched metric loading ({method}) failed ({type(err).__name__}: "
                f"{first}); read through MLflow's client instead"
            )
    if long is None:
        long, method = _history_client(client, run_keys, workers), "client"
    long = long[long["key"].isin(keys)].copy()  # the SQL path reads every metric, summaries too
    # SQL stores keep +/-inf as +/-float max, and every read path hands that back.
    value = long["value"].astype(float)
    long["value"] = value.mask(value >= _FLOAT_MAX, np.inf).mask(value <= -_FLOAT_MAX, -np.inf)
    return long, method


def _wide(long: pd.DataFrame) -> pd.DataFrame:
    """(run_id, step) rows, a column per metric; a re-logged step keeps its latest value."""
    if long.empty:
        return pd.DataFrame(columns=["run_id", "epoch"])
    long = long.sort_values(["run_id", "key", "step", "timestamp"])
    long = long.drop_duplicates(["run_id", "key", "step"], keep="last")
    wide = long.pivot(index=["run_id", "step"], columns="key", values="value")
    wide.columns.name = None
    return wide.rename(columns=METRIC_RENAMES).reset_index().rename(columns={"step": "epoch"})


# ---------------------------------------------------------------- the study


def load_study(
    experiment: str,
    parent_run_id: str | None = None,
    tracking_uri: str | None = None,
    *,
    method: str = "auto",
) -> Study:
    """Read the training runs of `experiment` (children of `parent_run_id` if given).

    Raises StudyError when the experiment or parent run does not exist or holds
    no training runs. `method` forces the metric path ("sql", "rest", "client").
    """
    uri = resolve_tracking_uri(tracking_uri)
    if not _sqlite_path_exists(uri):
        raise StudyError(f"no MLflow store at {uri} (the file does not exist)")
    started = time.perf_counter()
    client = MlflowClient(tracking_uri=uri)
    try:
        exp = client.get_experiment_by_name(experiment)
    except MlflowException as err:
        first = err.message.partition("\n")[0]
        raise StudyError(f"cannot read MLflow store {uri}: {first}") from None
    if exp is None:
        names = _experiment_names(client)
        hint = f"; experiments there: {', '.join(names)}" if names else "; the store is empty"
        raise StudyError(f"no experiment named {experiment!r} in {uri}{hint}")
    notes: list[str] = []
    filter_string = ""
    parent_name = None
    if parent_run_id:
        try:
            parent = client.get_run(parent_run_id)
        except MlflowException:
            raise StudyError(f"no run with id {parent_run_id!r} in {uri}") from None
        if parent.info.experiment_id != exp.experiment_id:
            raise StudyError(
                f"run {parent_run_id} belongs to experiment id {parent.info.experiment_id}, "
                f"not to {experiment!r} (id {exp.experiment_id})"
            )
        filter_string = f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
        parent_name = parent.info.run_name

    runs = _search_all_runs(client, exp.experiment_id, filter_string)
    all_runs, raw_params = _runs_frame(runs)
    if all_runs.empty:
        where = f"run {parent_run_id} has no child runs" if parent_run_id else "it has no runs"
        raise StudyError(f"experiment {experiment!r} holds nothing to analyse: {where}")
    sweeps = all_runs.loc[all_runs["run_kind"] == contract.SWEEP, "run_id"]
    sweep_parents = [] if parent_run_id else sweeps.tolist()
    frame = _training_runs(all_runs, notes)
    if frame.empty:
        raise StudyError(
            f"experiment {experiment!r} holds no training runs "
            f"({len(all_runs)} run(s), none with run_kind=train and a model.depth param)"
        )
    for column, kind in PARAM_COLUMNS.values():
        _typed(frame, column, kind)
    frame["diverged_epoch"] = frame["diverged_epoch"].astype("Int64")
    # The net's kind as the run tagged it (plain, residual, skip@..., ...-fixup); runs that
    # predate the tag say it through model.residual.
    by_param = np.where(frame["residual"].fillna(False).astype(bool), "residual", "plain")
    frame["arch"] = frame.pop("arch_tag").fillna(pd.Series(by_param, index=frame.index))
    frame["usable"] = (frame["status"] == DONE) | frame["diverged"]
    frame = frame.sort_values(
        ["model", "batch_norm", "residual", "depth", "seed", "start_time"], na_position="last"
    ).reset_index(drop=True)

    run_keys = dict(zip(frame["run_id"], frame.pop("metric_keys"), strict=True))
    steps = int(frame["epochs"].max()) + 1 if frame["epochs"].notna().any() else 1000
    long, used = fetch_histories(
        client, uri, run_keys, method=method, notes=notes, steps_hint=steps
    )
    wide = _wide(long)
    epochs = frame.merge(wide, on="run_id", how="inner")
    errors = {  # test: logged once, at the last epoch
        "train_error": contract.TRAIN_ACCURACY,
        "val_error": contract.VAL_ACCURACY,
        "test_error": contract.TEST_ACCURACY,
    }
    for error, accuracy in errors.items():
        if accuracy in epochs:
            epochs[error] = 1.0 - epochs[accuracy]
    epochs = epochs.sort_values(["run_id", "epoch"]).reset_index(drop=True)
    _note_statuses(frame, notes)
    raw_params = raw_params.loc[raw_params.index.intersection(frame["run_id"])]
    return Study(
        experiment=experiment,
        experiment_id=exp.experiment_id,
        tracking_uri=uri,
        parent_run_id=parent_run_id,
        parent_run_name=parent_name,
        runs=frame,
        epochs=epochs,
        params=raw_params,
        sweep_parents=sweep_parents,
        notes=notes,
        method=used,
        seconds=time.perf_counter() - started,
    )


def _experiment_names(client: MlflowClient, limit: int = 8) -> list[str]:
    with contextlib.suppress(MlflowException):
        return [e.name for e in client.search_experiments(max_results=limit)]
    return []


def _note_statuses(frame: pd.DataFrame, notes: list[str]) -> None:
    running = frame[frame["status"].isin(UNFINISHED)]
    if len(running):
        notes.append(
            f"{len(running)} run(s) still running; they are counted but left out of the "
            f"figures and means until they finish"
        )
    broken = frame[frame["status"].isin(BROKEN) & ~frame["diverged"]]
    if len(broken):
        notes.append(
            f"{len(broken)} run(s) FAILED or KILLED; counted in the table, left out of the means"
        )
    no_grad = frame[~frame["has_gradients"]]
    if len(no_grad):
        notes.append(
            f"{len(no_grad)} run(s) have no gradient metrics (gradients.enabled=false?); "
            f"they are left out of the gradient figures"
        )


# ---------------------------------------------------------------- per-layer profiles


def _local_artifact_dir(artifact_uri: str | None) -> Path | None:
    """The folder of a run's artifacts when it is on this machine, else None."""
    if not artifact_uri:
        return None
    parsed = urlparse(artifact_uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(artifact_uri)
    return None


def load_run_artifacts(study: Study, name: str, columns: set[str], *, what: str) -> pd.DataFrame:
    """Every usable run's CSV artifact `name`, stacked, with a leading `run_id` column.

    Local artifact stores are read in place; others are downloaded through
    MLflow, several runs at a time. Runs without the artifact (or without the
    `columns`) are skipped and named in `study.notes` ("... left out of `what`").
    """
    client = MlflowClient(tracking_uri=study.tracking_uri)
    runs = study.usable
    with tempfile.TemporaryDirectory() as tmp:

        def one(run_id: str, artifact_uri: str | None) -> pd.DataFrame | None:
            try:
                local = _local_artifact_dir(artifact_uri)
                if local is not None:
                    path = local / name
                else:
                    dst = Path(tmp) / run_id
                    dst.mkdir()
                    path = client.download_artifacts(run_id, name, str(dst))
                frame = pd.read_csv(path)
            except Exception:  # absent, unreadable or empty: the run is named below
                return None
            frame.insert(0, "run_id", run_id)
            return None if frame.empty or not set(frame.columns) >= columns else frame

        pairs = list(zip(runs["run_id"], runs["artifact_uri"], strict=True))
        results = _in_parallel(one, pairs, HISTORY_WORKERS)
    frames = [frame for frame in results if frame is not None]
    if len(frames) < len(results):
        names = runs.loc[[frame is None for frame in results], "run_name"].astype(str).tolist()
        study.notes.append(
            f"{len(names)} run(s) have no {name} and are left out of the "
            f"{what}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_grad_profiles(study: Study) -> pd.DataFrame:
    """Every usable run's `grad_profile.csv`, stacked, with the run's columns joined.

    Columns: the run columns of `study.runs`, then epoch, layer_index, layer_name,
    grad_norm, weight_norm. Runs without the artifact are named in `study.notes`.
    """
    profiles = load_run_artifacts(
        study, contract.PROFILE_ARTIFACT, set(contract.PROFILE_COLUMNS), what="per-layer profile"
    )
    if profiles.empty:
        return profiles
    profiles = profiles.astype({"epoch": "int64", "layer_index": "int64"})
    return study.usable.merge(profiles, on="run_id", how="inner")


def logged(study: Study, metric: str) -> bool:
    """True when some run of the study logged `metric` (a finite value at some step)."""
    return metric in study.epochs and study.epochs[metric].notna().any()


def runs_artifact(
    study: Study, runs: pd.DataFrame, metric: str, name: str, columns: list[str], *, what: str
) -> pd.DataFrame:
    """CSV artifact `name` of the `runs` that have it (`load_run_artifacts`), joined to their
    columns (depth, arch, condition, ...); empty, and not read, when no run logged `metric`
    (a study without lesions or landscapes downloads nothing for them)."""
    if not logged(study, metric):
        return pd.DataFrame()
    frame = load_run_artifacts(study, name, set(columns), what=what)
    return runs.merge(frame, on="run_id") if not frame.empty else pd.DataFrame()
