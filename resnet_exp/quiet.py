"""Keep TensorFlow's start-up chatter and the probe's retracing notices off the console.

The entry point calls `quiet_tensorflow()` before anything imports TensorFlow
(the C++ log level is read once, at import) and again in each job, since a
parallel launcher's worker processes do not run the entry point's module code.
Errors still show: only INFO/WARNING chatter is hidden.
"""

from __future__ import annotations

import logging
import os


class _DropRetracing(logging.Filter):
    """tf.function's "triggered tf.function retracing" notice: expected in a sequential sweep.

    Each job of a sequential sweep builds a new model in the same process, so the
    gradient probe's tf.function is traced again per model, by design.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "retracing" not in record.getMessage()


def quiet_tensorflow() -> None:
    # 2: hide INFO and WARNING from TensorFlow's C++ side (oneDNN, CPU features, absl notices)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _DropRetracing) for f in logger.filters):
        logger.addFilter(_DropRetracing())
    try:
        from absl import logging as absl_logging  # installed with TensorFlow

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass
    # urllib3's "Retrying (...)" warnings repeat for every retry of a store request
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
