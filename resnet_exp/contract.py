"""What a training run writes to MLflow, named once: the writers and the analysis import these.

Metrics are logged at step = epoch: step 0 is initialisation (gradients and branch
magnitudes only), steps 1..E the end of each epoch; `test_*` and `lesion_*` once, at
the last epoch's step. Tags hold what identifies and explains a run; artifacts hold
the per-layer and per-block tables, whose CSV columns are listed here too. The
reference page is docs/contract.md.
"""

from __future__ import annotations

# ---------------------------------------------------------------- metrics
TRAIN_LOSS = "train_loss"
TRAIN_ACCURACY = "train_accuracy"
VAL_LOSS = "val_loss"
VAL_ACCURACY = "val_accuracy"
TEST_LOSS = "test_loss"
TEST_ACCURACY = "test_accuracy"
LEARNING_RATE = "lr"  # the rate at the epoch's start
EPOCH_TIME = "epoch_time_s"
# Keras's log keys -> the names above
KERAS_RENAMES = {
    "loss": TRAIN_LOSS,
    "accuracy": TRAIN_ACCURACY,
    "val_loss": VAL_LOSS,
    "val_accuracy": VAL_ACCURACY,
}

GRAD_FIRST = "grad_first_norm"  # ‖∂L/∂W‖₂ of the first weight layer
GRAD_LAST = "grad_last_norm"  # ... of the last (the classifier)
GRAD_FIRST_REL = "grad_first_rel"  # ... over ‖W‖₂
GRAD_LAST_REL = "grad_last_rel"
GRAD_RATIO = "grad_first_last_ratio"  # first over last: > 1 explodes toward the input
PROBE_LOSS = "probe_loss"  # gradients.source=probe only
GRADIENT_METRICS = (GRAD_FIRST, GRAD_LAST, GRAD_FIRST_REL, GRAD_LAST_REL, GRAD_RATIO, PROBE_LOSS)

BRANCH_RATIO_MEAN = "branch_ratio_mean"  # mean over blocks of ‖F(x)‖ / ‖x‖
BRANCH_RATIO_MAX = "branch_ratio_max"
BRANCH_PROBE_TIME = "branch_probe_s"

LESION_INTACT_ACCURACY = "lesion_intact_accuracy"
LESION_MEAN_DROP = "lesion_mean_drop"  # accuracy drops, fractions, over same-shape blocks
LESION_MAX_DROP = "lesion_max_drop"
LESION_DOWNSAMPLING_MEAN_DROP = "lesion_downsampling_mean_drop"
LESION_TIME = "lesion_time_s"

# curvature (`curvature.enabled`): at step 0, every `curvature.every` epochs, and the last step
HESSIAN_TOP_EIG = "hessian_top_eig"  # top Hessian eigenvalue of the data loss, power iteration
HESSIAN_TOP_EIG_ITERATIONS = "hessian_top_eig_iterations"  # Hessian-vector products it took
HESSIAN_TOP_EIG_RESIDUAL = "hessian_top_eig_residual"  # |Hv - λv|: an eigenvalue is this close
HESSIAN_TRACE = "hessian_trace"  # Hutchinson's estimate
HESSIAN_TRACE_STDERR = "hessian_trace_stderr"  # its standard error
HESSIAN_BATCH_LOSS = "hessian_batch_loss"  # the data loss on the curvature batch
CURVATURE_TIME = "curvature_time_s"
CURVATURE_METRICS = (
    HESSIAN_TOP_EIG,
    HESSIAN_TOP_EIG_ITERATIONS,
    HESSIAN_TOP_EIG_RESIDUAL,
    HESSIAN_TRACE,
    HESSIAN_TRACE_STDERR,
    HESSIAN_BATCH_LOSS,
    CURVATURE_TIME,
)

# loss landscape (`landscape.enabled`): once, around the trained weights, at the last step
LANDSCAPE_SHARPNESS = "landscape_sharpness"  # loss rise at half the span along d1 (mean of ±)
LANDSCAPE_NONCONVEXITY = "landscape_nonconvexity"  # fraction of the surface curving down
LANDSCAPE_CENTRE_LOSS = "landscape_centre_loss"  # the subset's loss at the trained weights
LANDSCAPE_TIME = "landscape_time_s"

# ---------------------------------------------------------------- tags
NOTE = "mlflow.note.content"  # the description the MLflow UI shows
PARENT = "mlflow.parentRunId"
RUN_KIND = "run_kind"  # TRAIN, SWEEP or REPORT
TRAIN, SWEEP, REPORT = "train", "sweep", "report"
CONFIG_HASH = "config_hash"  # what a run computes; a resumed sweep skips a FINISHED match
SWEEP_ID = "sweep_id"
LAUNCHES = "launches"  # a sweep parent: how many launches its work took (resumes + 1)
WORK_S = "work_s"  # a sweep parent: seconds of work summed over launches (its Duration)
OVERRIDES = "overrides"  # the command line's overrides for this job
DIVERGED = "diverged"  # "true" / "false"
DIVERGED_EPOCH = "diverged_epoch"
ERROR = "error"  # why a run ended FAILED or KILLED
RESUMED_FROM_EPOCH = "resumed_from_epoch"  # a reopened run continued after this epoch
RESTARTS = "restarts"  # how many times a stopped run was reopened from its checkpoint
GIT_COMMIT = "git_commit"
ARCH, DEPTH, MODEL = "arch", "depth", "model"  # comparison tags: net kind, depth, family
SKIP_AT = "skip_at"  # the blocks with a skip: "all", "none" or their names, comma-separated

# ---------------------------------------------------------------- dataset inputs
DATASET_CONTEXT = "mlflow.data.context"  # the input tag saying which split a dataset is
TRAINING, VALIDATION, TEST = "training", "validation", "test"

# ---------------------------------------------------------------- artifacts and their columns
CONFIG_ARTIFACT = "config.yaml"
MODEL_SUMMARY_ARTIFACT = "model_summary.txt"
HISTORY_ARTIFACT = "history.csv"  # Keras's History, one row per epoch
PROFILE_ARTIFACT = "grad_profile.csv"  # one row per (step, kernel)
PROFILE_COLUMNS = ["epoch", "layer_index", "layer_name", "grad_norm", "weight_norm"]
BRANCH_ARTIFACT = "branch_magnitude.csv"  # one row per (step, block)
BRANCH_COLUMNS = [
    "epoch",
    "block_index",
    "block",
    "stage",
    "downsampling",
    "branch_norm",
    "input_norm",
    "ratio",
]
LESION_ARTIFACT = "lesion.csv"  # one row per deleted block; drop = intact - lesioned accuracy
LESION_COLUMNS = ["block_index", "block", "stage", "downsampling", "accuracy", "drop"]
LESION_K_ARTIFACT = "lesion_k.csv"  # one row per (k, draw) of k blocks deleted at once
LESION_K_COLUMNS = ["k", "draw", "blocks", "accuracy", "drop"]
PROFILE_IMAGE = "grad_profile"  # the per-epoch image chart's key
PROFILE_EPOCH_IMAGES = "grad_profile_epochs"  # epoch_000.png (init), epoch_001.png, ...
PROFILE_ALL_EPOCHS_IMAGE = "grad_profile_all_epochs.png"  # every epoch, by colour
CURVATURE_ARTIFACT = "curvature.csv"  # one row per measurement (epoch); HESSIAN_* as columns
CURVATURE_COLUMNS = [
    "epoch",
    "bn_mode",  # inference or training: how batch norm ran in the measured loss
    "examples",
    "parameters",
    "top_eig",
    "top_eig_iterations",
    "top_eig_converged",
    "top_eig_residual",
    "trace",
    "trace_stderr",
    "batch_loss",
    "seconds",
]  # then eig_2 .. eig_k when curvature.top_k > 1
DENSITY_ARTIFACT = "hessian_density.csv"  # SLQ nodes (curvature.density_runs > 0)
DENSITY_COLUMNS = ["epoch", "run", "eigenvalue", "weight"]  # weights sum to 1 per epoch
LANDSCAPE_1D_ARTIFACT = "landscape_1d.csv"  # the loss along d1 (filter-normalised units)
LANDSCAPE_1D_COLUMNS = ["alpha", "loss", "accuracy"]
LANDSCAPE_2D_ARTIFACT = "landscape_2d.csv"  # the loss over the (d1, d2) plane
LANDSCAPE_2D_COLUMNS = ["alpha", "beta", "loss", "accuracy", "curvature_min", "curvature_max"]
LANDSCAPE_IMAGE = "landscape.png"  # the surface's contour plot (log-spaced levels)

# ---------------------------------------------------------------- one-number summaries (step 0)
# Logged once, at step 0, when a run ends (`tracking.summaries.log_run_summary`), so the
# runs table can show and sort them as columns and the chart view draws them as bars.
INIT_GRAD_RATIO = "init_grad_first_last_ratio"  # grad_first_last_ratio at step 0
INIT_GRAD_FIRST = "init_grad_first_norm"
INIT_GRAD_LAST = "init_grad_last_norm"
FINAL_GRAD_RATIO = "final_grad_first_last_ratio"  # ... at the last logged epoch
FINAL_GRAD_FIRST = "final_grad_first_norm"
FINAL_GRAD_LAST = "final_grad_last_norm"
FINAL_TRAIN_ERROR = "final_train_error"  # 1 - the last epoch's train_accuracy
FINAL_VAL_ERROR = "final_val_error"
FINAL_TEST_ERROR = "final_test_error"  # only where test_accuracy was logged
DEPTH_METRIC = "depth"  # the `depth` tag as a number: sorts and plots in depth order
DIVERGED_METRIC = "diverged"  # the `diverged` tag as 0/1
SUMMARY_METRICS = (
    INIT_GRAD_RATIO,
    INIT_GRAD_FIRST,
    INIT_GRAD_LAST,
    FINAL_GRAD_RATIO,
    FINAL_GRAD_FIRST,
    FINAL_GRAD_LAST,
    FINAL_TRAIN_ERROR,
    FINAL_VAL_ERROR,
    FINAL_TEST_ERROR,
    DEPTH_METRIC,
    DIVERGED_METRIC,
)
RUN_COLOR = "mlflow.runColor"  # "#rrggbb": plain reds, residual blues, darker with depth
