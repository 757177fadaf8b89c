"""Print the MLflow UI links that open each study of a store in Model training mode.

    python scripts/ui_links.py [--tracking-uri URI] [--url http://127.0.0.1:5000]
                               [--no-save-views]

`make ui` prints them before it starts the UI. For each study's latest sweep: the
finding (a saved view: plain vs residual in depth order, in the runs table and the
first charts), as charts and as the table, and the sweep's parent run. A study logged
before runs had their summaries gets them, and its view, here (once; `--no-save-views`
only prints).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from mlflow.tracking import MlflowClient  # noqa: E402

from resnet_exp.tracking.store import resolve_tracking_uri  # noqa: E402
from resnet_exp.tracking.ui import study_links  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI, else ./mlflow.db")
    parser.add_argument("--url", default="http://127.0.0.1:5000", help="where the UI listens")
    parser.add_argument(
        "--no-save-views",
        action="store_true",
        help="only print: do not log missing run summaries nor save missing views",
    )
    args = parser.parse_args()
    uri = resolve_tracking_uri(args.tracking_uri)
    if uri.startswith("sqlite:///") and not os.path.exists(uri.removeprefix("sqlite:///")):
        print(f"no runs yet ({uri} does not exist): run `make demo` first")
        return
    lines = study_links(MlflowClient(uri), args.url, save_views=not args.no_save_views)
    print("Open a study in Model training mode:" if lines else f"no runs yet in {uri}")
    for line in lines:
        print(f"  {line}")


if __name__ == "__main__":
    main()
