"""One number per finding, logged once per run, so MLflow's runs table and charts show the study.

The runs table shows a metric's latest value and its charts draw single-step metrics as
bars, so what a user should compare across depth gets its own metric, computed from what
the run logged (`resnet_exp.contract`) and logged once at step 0 when the run ends:
the first/last gradient ratio and both norms at initialisation (step 0) and at the last
epoch, the final train/val/test errors, the depth and whether the run diverged. The run
also gets a colour (`mlflow.runColor`, what the UI's colour picker writes): plain nets
red, residual blue, other kinds (`skip@...`, `-skipinit`, `-fixup`) green or purple,
darker as they deepen, so every chart reads plain against residual without a legend.

Kept free of TensorFlow: the job calls it after training, the UI scripts on older runs.
"""

from __future__ import annotations

import colorsys
import math

from mlflow.tracking import MlflowClient

from resnet_exp import contract
from resnet_exp.tracking.store import log_batch, with_retry

# (summary at initialisation, summary at the last epoch) <- the per-epoch metric
_GRADIENTS = {
    contract.GRAD_RATIO: (contract.INIT_GRAD_RATIO, contract.FINAL_GRAD_RATIO),
    contract.GRAD_FIRST: (contract.INIT_GRAD_FIRST, contract.FINAL_GRAD_FIRST),
    contract.GRAD_LAST: (contract.INIT_GRAD_LAST, contract.FINAL_GRAD_LAST),
}
_ERRORS = {
    contract.TRAIN_ACCURACY: contract.FINAL_TRAIN_ERROR,
    contract.VAL_ACCURACY: contract.FINAL_VAL_ERROR,
    contract.TEST_ACCURACY: contract.FINAL_TEST_ERROR,
}

# Hues (degrees) by the net's kind; lightness falls with log depth between these depths.
_HUES = {"plain": 0.0, "residual": 215.0, "skip": 130.0, "init": 280.0}
_SHALLOW, _DEEP = 8, 110  # CIFAR ResNet-8 is the palest, ResNet-110 the darkest
_LIGHT, _DARK = 0.78, 0.28
SIGNIFICANT = 4  # digits a summary keeps


def run_color(arch: str | None, depth: float | None) -> str:
    """`#rrggbb` for a run: hue by kind (plain red, residual blue, `skip@...` green, a
    residual with a `-skipinit`/`-fixup` start purple), darker with depth."""
    kind = str(arch or "")
    if kind.startswith("skip@"):
        hue = _HUES["skip"]
    elif kind.startswith("residual-"):
        hue = _HUES["init"]
    elif kind.startswith("residual"):
        hue = _HUES["residual"]
    else:
        hue = _HUES["plain"]
    if depth is None or not math.isfinite(depth) or depth <= 0:
        lightness = (_LIGHT + _DARK) / 2
    else:
        span = math.log(_DEEP / _SHALLOW)
        share = min(1.0, max(0.0, math.log(depth / _SHALLOW) / span))
        lightness = _LIGHT - share * (_LIGHT - _DARK)
    red, green, blue = colorsys.hls_to_rgb(hue / 360, lightness, 0.75)
    return "#" + "".join(f"{round(c * 255):02x}" for c in (red, green, blue))


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def run_summary(client: MlflowClient, run_id: str) -> dict[str, float]:
    """The run's one-number summaries (`contract.SUMMARY_METRICS`), from what it logged,
    to `SIGNIFICANT` digits.

    Gradients: step 0 (initialisation) and the last logged step; errors: 1 - the latest
    accuracy (test only where logged); depth: the `depth` tag (else the `model.depth`
    param); diverged: 1.0 if the `diverged` tag says true, else 0.0. A summary whose
    source the run never logged is left out; non-finite values too.
    """
    run = with_retry(client.get_run, run_id)
    metrics, tags = run.data.metrics, run.data.tags
    out: dict[str, float] = {}
    for key, (at_init, at_end) in _GRADIENTS.items():
        if key not in metrics:
            continue
        history = with_retry(client.get_metric_history, run_id, key)
        by_step = {m.step: m.value for m in sorted(history, key=lambda m: m.timestamp)}
        if 0 in by_step:
            out[at_init] = by_step[0]
        last = max((s for s in by_step if s > 0), default=None)
        if last is not None:
            out[at_end] = by_step[last]
    for accuracy, error in _ERRORS.items():
        if accuracy in metrics:
            out[error] = 1.0 - metrics[accuracy]
    depth = _number(tags.get(contract.DEPTH)) or _number(run.data.params.get("model.depth"))
    if depth is not None:
        out[contract.DEPTH_METRIC] = depth
    out[contract.DIVERGED_METRIC] = float(tags.get(contract.DIVERGED) == "true")
    return {k: _shown(v) for k, v in out.items() if math.isfinite(v)}


def _shown(value: float) -> float:
    """Four significant digits: the runs table prints a metric in full (0.10526317358016968,
    a float32 accuracy's 0.699999988079071), and four tell every finding apart."""
    return float(f"{float(value):.{SIGNIFICANT}g}")


def log_run_summary(client: MlflowClient, run_id: str) -> dict[str, float]:
    """Log the run's summaries at step 0, each once (a value already there is not logged
    again), and give the run its colour unless it has one (a colour picked in the UI
    stays). Returns the summaries."""
    summary = run_summary(client, run_id)
    run = with_retry(client.get_run, run_id)
    have = run.data.metrics
    new = {k: v for k, v in summary.items() if have.get(k) != v}
    tags = {}
    if contract.RUN_COLOR not in run.data.tags:
        depth = summary.get(contract.DEPTH_METRIC)
        tags[contract.RUN_COLOR] = run_color(run.data.tags.get(contract.ARCH), depth)
    if new or tags:
        log_batch(client, run_id, metrics=new, step=0, tags=tags)
    return summary
