"""The only place that touches Keras's, MLflow's or Hydra's private parts, each for a measured
saving or for behaviour no public interface gives (Hydra: the search path its entry point
builds from the command line; MLflow's UI: the saved view of a study).

Every item says why it is here, what it saves and what happens when the library changes it;
`tests/test_compat.py` (Keras, Hydra), `tests/test_compat_analysis.py` (MLflow) and
`tests/test_ui.py`/`tests/test_ui_browser.py` (MLflow's UI) check each one against the
installed version and fail loudly (not silently slower or wrong) when the private thing has
moved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the analysis imports this module without TensorFlow
    import keras

# ---------------------------------------------------------------- Keras


def keras_untouched() -> bool:
    """True in a process that has created no Keras object yet.

    Why: `keras.backend.clear_session()` resets a sequential sweep's state between
    jobs, and its `gc.collect()` costs about 0.3 s; a fresh process (every job of a
    parallel sweep) has nothing to clear. Keras keeps a name counter per process in
    its private global state, set by the first layer, model or variable; it has no
    public "anything created yet?" call. Saves: part of the start-up gap that went
    from 5.52 to 5.18 s (process start to epoch 1, scripts/dev/bench.py --parts framework).
    If Keras moves it, this returns False and the session is cleared: slower, never
    wrong.
    """
    try:
        from keras.src.backend.common import global_state
    except ImportError:  # another Keras layout
        return False
    return global_state.get_global_attribute("object_name_uids") is None


def symbolic_build(model: keras.Model, data_batch: tuple[Any, Any]) -> bool:
    """Build the optimiser's slots and the compiled loss and metrics before `fit`.

    Why: Keras creates them inside the first traced train step, and a `tf.function`
    that creates variables is traced twice, so the first epoch pays its trace twice.
    Keras's own `Model._symbolic_build` (what it calls under a distribution
    strategy) creates the same variables up front. Saves: the first epoch of a
    ResNet-20 on digits took 8.0-10.1 s without it and 5.7-7.8 s with it (two loaded
    cores). Returns False, having built nothing, when Keras has no such method.
    """
    build = getattr(model, "_symbolic_build", None)
    if build is None:
        return False
    build(data_batch=data_batch)
    return True


def hook_optimizer_apply(model: keras.Model, wrap: Callable[[Callable], Callable]) -> Any:
    """Route every gradient the train step hands the optimiser through `wrap(apply)`.

    Why: Keras has no public per-step gradient hook. The in-step gradient recorder
    (`recording.gradients.StepGradientRecorder`) wraps the optimiser's `apply` for
    the duration of a fit and re-makes the train function so its next trace
    includes the wrapper; `unhook_optimizer_apply` undoes both. Saves: recording
    every epoch's first/last-layer gradients costs 1.000-1.003x a run's duration
    this way (8 repeats, scripts/dev/bench.py --parts recording) against 1.07x for a
    second, probe graph. Returns the optimiser that was hooked.
    """
    optimizer = model.optimizer
    optimizer.apply = wrap(optimizer.apply)  # an instance attribute shadows the method
    model.make_train_function(force=True)
    return optimizer


def unhook_optimizer_apply(model: keras.Model, optimizer: Any) -> None:
    """Undo `hook_optimizer_apply`: the class's own `apply`, a train function without it."""
    if "apply" in vars(optimizer):
        del optimizer.apply
    model.make_train_function(force=True)


# ---------------------------------------------------------------- MLflow (analysis)
#
# MLflow's Python client reads a metric's history one (run, key) at a time and has no
# bulk call; the analysis loader (`resnet_exp.analysis.load`) uses these batched reads
# where the store allows. Imports are local: the analysis needs neither SQLAlchemy nor
# MLflow's REST helpers until it reads a store that way.

METRICS_TABLE = "metrics"
METRICS_TABLE_COLUMNS = ("run_uuid", "key", "step", "value", "timestamp", "is_nan")
_SQL_CHUNK = 500  # run ids per SELECT: well under every backend's bound-parameter limit


def metric_histories_sql(uri: str, run_ids: list[str]) -> Any:
    """Every logged point of every metric of `run_ids`, read from an SQL store's own table.

    Returns a pandas frame with columns run_id, key, step, value, timestamp, as
    `get_metric_history` gives them (NaN, stored as 0 with is_nan set, restored;
    +/-inf stays +/-float max, as MLflow's SQL stores keep it).

    Why: one SELECT per 500 run ids over MLflow's `metrics` table (its own schema,
    kept by its alembic migrations, not an API) instead of one client call per
    metric per run. Saves: 500 runs x 100 epochs x 12 metrics (603,000 points) from
    SQLite in 6.1 s instead of 79.9 s through the client, 8 calls at a time: 13x
    (12.3-13.9x over paired repeats; `python scripts/dev/bench_load.py --runs 500
    --epochs 100 --server`, medians of 2, two heavily loaded cores).
    If MLflow changes it: the SELECT fails, the loader notes it in the report and
    reads through the public client instead: slower, never wrong.
    `tests/test_compat_analysis.py` fails first, naming what moved.
    """
    import pandas as pd
    import sqlalchemy as sa

    columns = "run_uuid AS run_id, key, step, value, timestamp, is_nan"
    query = sa.text(f"SELECT {columns} FROM {METRICS_TABLE} WHERE run_uuid IN :ids")
    query = query.bindparams(sa.bindparam("ids", expanding=True))
    engine = sa.create_engine(uri)
    frames = []
    try:
        with engine.connect() as conn:
            for start in range(0, len(run_ids), _SQL_CHUNK):
                ids = list(run_ids[start : start + _SQL_CHUNK])
                frames.append(pd.read_sql_query(query, conn, params={"ids": ids}))
    finally:
        engine.dispose()
    long = pd.concat(frames, ignore_index=True)
    long["value"] = long["value"].astype(float).mask(long["is_nan"].astype(bool))
    return long.drop(columns="is_nan")


_BULK_ENDPOINT = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"  # the UI's; up to 100 runs
_BULK_MAX_POINTS = 25_000  # per response; a fuller answer may be cut short
_INTERVAL_ENDPOINT = "/api/2.0/mlflow/metrics/get-history-bulk-interval"
_INTERVAL_MAX_POINTS = 2500  # per run; beyond that the server samples
_SERVER_MAX_RUNS = 100


def metric_histories_server(
    client: Any, run_ids: list[str], keys: list[str], steps: int, workers: int = 8
) -> Any:
    """Every logged point of `keys` for `run_ids`, from a tracking server's bulk endpoints.

    Returns the frame `metric_histories_sql` returns. `steps` (the most points a
    run has per key) sizes the batches so that no answer is cut short.

    Why: one request per metric key per batch of runs instead of one per metric per
    run: the server's `_BULK_ENDPOINT` (the MLflow UI's charts use it: up to 100 runs
    and 25,000 points an answer), or, on a server without it, the REST API's
    `_INTERVAL_ENDPOINT` (100 runs, every point up to 2,500 steps a run). MLflow's
    Python client wraps neither, so they are called with
    `mlflow.utils.rest_utils.http_request` and the client's own credentials
    (`client._tracking_client.store.get_host_creds()`: the usual MLFLOW_TRACKING_*
    variables), several requests at a time.
    Saves: 500 runs x 100 epochs x 12 metrics through a local `mlflow server` (4
    workers, SQLite behind it) in 28.6 s instead of 128.9 s through the client, 8
    calls at a time: 4.5x (3.6-6.1x over paired repeats; same command as
    `metric_histories_sql`, its --server part).
    If MLflow changes it: a failing request makes the loader note it and read
    through the public client instead. `tests/test_compat_analysis.py` fails first.
    """
    from concurrent.futures import ThreadPoolExecutor

    import pandas as pd
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    creds = client._tracking_client.store.get_host_creds()

    def get(endpoint: str, params: dict) -> list[dict]:
        response = http_request(creds, endpoint, "GET", params=params)
        verify_rest_response(response, endpoint)
        return response.json().get("metrics", [])

    def bulk(chunk: list[str], key: str) -> list[dict]:
        params = {"run_id": chunk, "metric_key": key, "max_results": _BULK_MAX_POINTS}
        metrics = get(_BULK_ENDPOINT, params)
        if len(metrics) >= _BULK_MAX_POINTS and len(chunk) > 1:  # cut short: halve, again
            half = len(chunk) // 2
            return bulk(chunk[:half], key) + bulk(chunk[half:], key)
        return metrics

    def interval(chunk: list[str], key: str) -> list[dict]:
        params = {"run_ids": chunk, "metric_key": key, "max_results": _INTERVAL_MAX_POINTS}
        return get(_INTERVAL_ENDPOINT, params)

    fetch, size = bulk, max(1, min(_SERVER_MAX_RUNS, _BULK_MAX_POINTS // max(1, steps)))
    try:
        bulk(run_ids[:1], keys[0])
    except Exception:  # a server without the UI's endpoint (a proxy, Databricks)
        fetch, size = interval, _SERVER_MAX_RUNS
    tasks = [
        (list(run_ids[start : start + size]), key)
        for key in keys
        for start in range(0, len(run_ids), size)
    ]
    with ThreadPoolExecutor(max(1, min(workers, len(tasks)))) as pool:
        answers = list(pool.map(lambda task: fetch(*task), tasks))
    rows = [
        (
            m["run_id"],
            m["key"],
            int(m.get("step", 0)),
            _json_float(m.get("value")),
            int(m.get("timestamp", 0)),
        )
        for metrics in answers
        for m in metrics
    ]
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value", "timestamp"])


def _json_float(value: Any) -> float:
    if isinstance(value, str):  # MLflow's JSON writes NaN and +/-inf as strings
        return float(value.replace("Infinity", "inf"))
    return float("nan") if value is None else float(value)


# ---------------------------------------------------------------- Hydra (the command-line check)
#
# `run.command_line` composes a command line's config before `@hydra.main` starts, and
# must compose exactly what Hydra will. Hydra's compose API (`initialize_config_dir`)
# takes one config folder; `@hydra.main` also reads `--config-path`, `--config-name` and
# `--config-dir` from the command line and builds its search path from them itself
# (`hydra._internal.utils._run_hydra`). The `hydra.searchpath` override, the public way to
# add a folder, puts it after every other entry and replaces a primary config's own
# `hydra.searchpath`, so composing `--config-dir D` that way differs from Hydra's where a
# file is in both folders or the primary config lists a search path. These build Hydra's
# own: the parser and search path functions `_run_hydra` calls, and
# `Hydra.create_main_hydra2`, which the compose API's `initialize_config_dir` calls too.
# Saves: nothing in time; the check refused every user's folder (issue 21) without it.
# If Hydra moves them: `tests/test_compat.py` fails, naming what moved (an import error
# here would stop every run, so those tests are where a Hydra upgrade must start).


def hydra_arguments(argv: list[str]) -> Any:
    """`argv` parsed as `@hydra.main` parses `sys.argv[1:]` (an `argparse.Namespace`), or
    None where Hydra's parser refuses it (Hydra then says why, as it would anyway)."""
    import contextlib
    import io

    from hydra._internal.utils import get_args_parser

    quiet = io.StringIO()
    try:
        with contextlib.redirect_stderr(quiet), contextlib.redirect_stdout(quiet):
            return get_args_parser().parse_args(argv)
    except SystemExit:  # a bad flag, or --version: left to Hydra's own parse
        return None


def hydra_primary_dir(entry_file: str, config_path: str) -> str:
    """The primary config folder `@hydra.main(config_path=...)` in `entry_file` reads:
    `config_path` as is when absolute (or pkg://), else relative to the entry file's folder."""
    from hydra._internal.utils import compute_search_path_dir
    from hydra.core.utils import validate_config_path

    validate_config_path(config_path)
    return str(compute_search_path_dir(entry_file, None, config_path))


def hydra_search_path(primary_dir: str, config_dir: str | None) -> Any:
    """The `ConfigSearchPath` `@hydra.main` builds: Hydra's own configs, `primary_dir`, the
    plugins' folders, `--config-dir` (`config_dir`, resolved against the working folder)
    just before the structured configs. A missing `config_dir` raises Hydra's own
    `SearchPathException`."""
    import os

    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.errors import SearchPathException

    search_path = create_config_search_path(primary_dir)
    if config_dir is not None:
        folder = os.path.abspath(config_dir)
        if not os.path.isdir(folder):
            raise SearchPathException(f"Additional config directory '{folder}' not found")
        search_path.prepend(
            provider="command-line",
            path=f"file://{folder}",
            anchor=SearchPathQuery(provider="schema"),
        )
    return search_path


def initialize_hydra(search_path: Any, job_name: str) -> None:
    """Set Hydra's global state as `@hydra.main` does, so that the compose API composes
    from `search_path` (`initialize_config_dir` does the same with a path of its own).
    The caller clears it (`GlobalHydra.instance().clear()`)."""
    from hydra._internal.hydra import Hydra

    Hydra.create_main_hydra2(task_name=job_name, config_search_path=search_path)


# ---------------------------------------------------------------- MLflow UI (a study's saved view)
#
# MLflow's UI carries the runs table's filter and sort in its URL, but not its columns,
# its chart sections, or how many runs the charts plot (the first 10 rows by default).
# A *shared view* carries them all: the UI's "Views > Share" stores the page's state as an
# experiment tag `mlflow.sharedViewState.<key>` and opens it from
# `/#/experiments/<id>/runs?viewStateShareKey=<key>`. Neither the tag nor the state is
# documented or in MLflow's Python API: they are the UI bundle's own (MLflow 3.17.2:
# `main.*.js`), read off it and checked in Chromium. The tag's value is the JSON
# `{"name", "createdAt", "updatedAt", "state"}`, `state` itself a JSON string of the
# page's React state; a column is named `metrics.`<key>`` or `tags.`<key>``; a chart
# section and a chart are dicts with the fields below. The link must carry no other
# facet (sort, filter, ...) or the UI ignores the view. `tracking.ui.save_study_view`
# writes one per study, so `make ui`'s link opens on plain vs residual across depth.
# Saves: nothing in time; without it a user adds five columns, a sort and a chart
# section by hand every time. If MLflow changes it: the link opens the default runs
# page (nothing breaks, the view is ignored); `tests/test_ui.py` checks that the
# installed bundle still reads the tag and the URL key, and `tests/test_ui_browser.py`
# opens the view in headless Chromium and fails naming what is no longer shown.

UI_VIEW_TAG_PREFIX = "mlflow.sharedViewState."
UI_VIEW_URL_KEY = "viewStateShareKey"
UI_BUNDLE_WORDS = (
    "sharedViewState",
    UI_VIEW_URL_KEY,
    "showRunParams",
    "imageKeys",
)  # what the bundle must still contain
_UI_MODEL_METRICS = "Model metrics"  # the UI's own sections, for metrics without a prefix
_UI_SYSTEM_METRICS = "System metrics"


def ui_column(kind: str, key: str) -> str:
    """The runs table's id of a column: `kind` is "metrics", "params" or "tags"."""
    return f"{kind}.`{key}`"


def ui_bar_chart(uuid: str, section: str, key: str, title: str | None = None) -> dict:
    """A bar chart of a metric's latest value per run, in the table's order."""
    return _ui_chart("BAR", uuid, section, key, title)


def ui_line_chart(
    uuid: str, section: str, key: str, title: str | None = None, log_y: bool = False
) -> dict:
    """A line chart of a metric against step (= epoch here)."""
    return _ui_chart("LINE", uuid, section, key, title) | {
        "lineSmoothness": 0,
        "xAxisScaleType": "linear",
        "scaleType": "log" if log_y else "linear",
        "range": {},
        "xAxisKey": "step",
        "selectedXAxisMetricKey": "",
        "yAxisKey": "metric",
        "yAxisExpressions": [],
        "ignoreOutliers": False,
        "useGlobalXaxisKey": True,
        "useGlobalLineSmoothing": True,
    }


def ui_scatter_chart(uuid: str, section: str, x_key: str, y_key: str) -> dict:
    """A scatter chart of two metrics' latest values, a point per run in its colour (MLflow
    3.17's RunsChartsScatterCardConfig: axes as {key, type}, no log scale)."""
    card = _ui_chart("SCATTER", uuid, section, y_key, None)
    del card["displayName"], card["metricKey"]
    axis = {"type": "METRIC"}
    return card | {"xaxis": axis | {"key": x_key}, "yaxis": axis | {"key": y_key}}


def ui_image_chart(uuid: str, section: str, key: str) -> dict:
    """An image card of a logged image key (`log_image(key=, step=)`), a step slider per run,
    without the `param=value` lines the UI otherwise prints above every image
    (`showRunParams`, default true, in MLflow 3.17's ImageGridPlot). The UI draws such a
    card for at most 10 runs, whatever `runsCountToCompare` says."""
    card = _ui_chart("IMAGE", uuid, section, key, None)
    del card["displayName"], card["metricKey"]
    return card | {"imageKeys": [key], "step": 0, "showRunParams": False}


def _ui_chart(kind: str, uuid: str, section: str, key: str, title: str | None) -> dict:
    """What every chart card of a saved view holds."""
    return {
        "uuid": uuid,
        "type": kind,
        "runsCountToCompare": 100,
        "metricSectionId": section,
        "deleted": False,
        "isGenerated": False,
        "displayName": title or key,
        "metricKey": key,
    }


def ui_view_state(
    *,
    search_filter: str,
    order_by: str,
    ascending: bool,
    columns: list[str],
    section: tuple[str, str],
    charts: list[dict],
) -> dict:
    """The runs page's state: `section` (uuid, name) first, with `charts`; then the UI's
    own sections (it fills "Model metrics" with every other metric); every run plotted."""
    uuid, name = section
    sections = [
        {"uuid": uuid, "name": name, "generated": False},
        {"uuid": f"{uuid}-model", "name": _UI_MODEL_METRICS, "generated": True},
        {"uuid": f"{uuid}-system", "name": _UI_SYSTEM_METRICS, "generated": True},
    ]
    return {
        "searchFilter": search_filter,
        "orderByKey": order_by,
        "orderByAsc": ascending,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "datasetsFilter": [],
        "modelVersionFilter": "All Runs",
        "selectedColumns": columns,
        "columnOrder": columns,  # else the UI shows metrics, then params, then tags
        "columnWidths": {},
        "runsHiddenMode": "SHOW_ALL",  # default: only the first 10 rows are plotted
        "compareRunCharts": charts,
        "compareRunSections": [
            {
                "uuid": s["uuid"],
                "name": s["name"],
                "display": s["name"] != _UI_SYSTEM_METRICS,
                "isReordered": False,
                "deleted": False,
                "isGenerated": s["generated"],
            }
            for s in sections
        ],
        "viewMaximized": False,
        "runListHidden": False,
        "isAccordionReordered": True,  # keep our section order, do not re-sort
        "useGroupedValuesInCharts": True,
        "hideEmptyCharts": True,
        "groupBy": None,
        "groupsExpanded": {},
        "autoRefreshEnabled": True,
        "globalLineChartConfig": {
            "xAxisKey": "step",
            "lineSmoothness": 0,
            "selectedXAxisMetricKey": "",
        },
    }


def ui_view_tag(key: str, name: str, state: dict, now_ms: int) -> tuple[str, str]:
    """The experiment tag (key, value) that holds a shared view of the runs page."""
    import json

    value = {"name": name, "createdAt": now_ms, "updatedAt": now_ms, "state": json.dumps(state)}
    return f"{UI_VIEW_TAG_PREFIX}{key}", json.dumps(value)


def ui_bundle_missing(words: tuple[str, ...] = UI_BUNDLE_WORDS) -> list[str]:
    """The `words` the installed MLflow UI's JavaScript no longer contains (empty: all there).

    A cheap check that the shared-view format above is still the UI's: the bundle that
    reads the tag and the URL key names both."""
    from pathlib import Path

    import mlflow.server

    folder = Path(mlflow.server.__file__).parent / "js" / "build" / "static" / "js"
    missing = set(words)
    for path in sorted(folder.glob("main.*.js")) + sorted(folder.glob("*.js")):
        text = path.read_text(encoding="utf-8", errors="replace")
        missing -= {w for w in missing if w in text}
        if not missing:
            break
    return sorted(missing)
