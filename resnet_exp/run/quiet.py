"""Keep TensorFlow's start-up chatter and the probe's retracing notices off the console.

The entry point calls `quiet_tensorflow()` before anything imports TensorFlow
(the C++ log level is read once, at import) and again in each job, since a
parallel launcher's worker processes do not run the entry point's module code.
Errors still show: only INFO/WARNING chatter is hidden.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator


def _drop_retracing(record: logging.LogRecord) -> bool:
    """Drop tf.function's "triggered tf.function retracing" notice: expected in a sequential
    sweep, where each job builds a new model in the same process, so the probes'
    tf.functions (the fixed-batch gradient probe, the branch magnitudes) are traced again
    per model, by design."""
    return "retracing" not in record.getMessage()


def quiet_tensorflow() -> None:
    # 2: hide INFO and WARNING from TensorFlow's C++ side (oneDNN, CPU features, absl notices)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("tensorflow").addFilter(_drop_retracing)  # added once, however often called
    from absl import logging as absl_logging  # installed with TensorFlow

    absl_logging.set_verbosity(absl_logging.ERROR)
    # urllib3's "Retrying (...)" warnings repeat for every retry of a store request
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


# TensorFlow's native libraries log these at import through their own copies of absl,
# before any log level is read: TF_CPP_MIN_LOG_LEVEL does not reach them.
_IMPORT_CHATTER = (
    "absl::InitializeLog()",
    "oneDNN custom operations are on",
    "cpu_feature_guard",
    "This TensorFlow binary is optimized",
)


@contextlib.contextmanager
def _native_stderr_without(chatter: tuple[str, ...]) -> Iterator[None]:
    """Capture what native code writes to fd 2; pass on every line but the chatter."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
            kept = [line for line in text.splitlines(True) if not any(c in line for c in chatter)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def import_tensorflow() -> None:
    """Import TensorFlow (and Keras) once, without their start-up notices."""
    if "tensorflow" in sys.modules:
        return
    quiet_tensorflow()
    with _native_stderr_without(_IMPORT_CHATTER):
        import keras  # noqa: F401
        import tensorflow  # noqa: F401


# the modules whose loggers print a sweep's "#N : overrides" lines
_LAUNCHER_LOGGERS = (
    "hydra._internal.core_plugins.basic_launcher",
    "hydra_plugins.hydra_joblib_launcher._core",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher",
)


def hide_injected_overrides(injected: tuple[str, ...]) -> None:
    """Show each launched job's overrides as the user wrote them: drop those the sweeper adds
    (`injected`, prefixes such as `tracking.parent_run_id=`), which are bookkeeping."""

    def without_injected(record: logging.LogRecord) -> bool:
        head, sep, overrides = record.getMessage().partition(" : ")
        if sep and head.strip().startswith("#"):
            kept = [o for o in overrides.split(" ") if not o.startswith(injected)]
            record.msg, record.args = f"{head}{sep}{' '.join(kept)}", ()
        return True

    for name in _LAUNCHER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(getattr(f, "__name__", "") == "without_injected" for f in logger.filters):
            logger.addFilter(without_injected)
