"""The report as MLflow's UI shows it: links that resolve there, findings as a description.

`report.md` in the output folder links its figures and `summary.csv` relatively,
which works on disk and on GitHub. MLflow's artifact viewer renders markdown at
the UI's address, where a relative link points nowhere (and it drops `data:`
images), so the copy logged to MLflow links each file through the server's own
artifact route, `get-artifact?path=report/<file>&run_uuid=<run>`: relative to
the UI's page (the UI routes after `#`), so it also works behind a static prefix.

The run the report is logged to gets a description (`mlflow.note.content`):
the findings, the summary table and the main figure, with the same links.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from urllib.parse import quote

import pandas as pd

from resnet_exp.analysis.load import Study
from resnet_exp.analysis.report import condition_keys, findings, markdown_table, table_frame

NOTE = "mlflow.note.content"
MAX_NOTE = 8000  # MLflow's limit on a tag value
_LINK = re.compile(r"(!?\[[^\]]*\])\(([^)\s]+)\)")
MAIN_FIGURE = "depth_vs_gradient"


def artifact_link(run_id: str, path: str) -> str:
    """A UI-relative URL of one artifact of `run_id`, served by the tracking server."""
    return f"get-artifact?path={quote(path, safe='/')}&run_uuid={run_id}"


def _is_relative(target: str) -> bool:
    return ":" not in target and not target.startswith(("/", "#"))


def for_mlflow(markdown: str, run_id: str, folder: str) -> str:
    """`markdown` with every relative link pointed at `folder/<link>` of `run_id`."""

    def swap(match: re.Match) -> str:
        text, target = match.groups()
        if not _is_relative(target):
            return match.group(0)
        return f"{text}({artifact_link(run_id, f'{folder}/{target}')})"

    return _LINK.sub(swap, markdown)


def description(
    study: Study,
    table: pd.DataFrame,
    finals: pd.DataFrame,
    run_id: str,
    folder: str,
    figures: Iterable[str] = (),
) -> str:
    """Findings, summary table and main figure (if drawn), within MLflow's tag length limit."""
    link = lambda name: artifact_link(run_id, f"{folder}/{name}")  # noqa: E731
    keys = [*condition_keys(table), "depth", "arch"]
    head = (
        f"**Findings** of `make_figures` ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{len(study.runs)} training runs). Full report: [report.md]({link('report.md')}) "
        f"in the artifacts, folder `{folder}/`."
    )
    lines = [s if s.startswith("  - ") else f"- {s}" for s in findings(study, table, finals)]
    parts = [
        head + "\n\n" + "\n".join(lines),
        "**Summary** (errors in %, mean ± sd over seeds; gradient norms at initialisation "
        f"and at the end; full precision in [summary.csv]({link('summary.csv')})):\n\n"
        + markdown_table(table_frame(table, keys)),
    ]
    if MAIN_FIGURE in figures:
        parts.append(f"![first- and last-layer gradient vs depth]({link(MAIN_FIGURE + '.png')})")
    text = parts[0]
    for part in parts[1:]:  # the findings always; the rest while it fits
        if len(text) + 2 + len(part) <= MAX_NOTE:
            text += "\n\n" + part
    return text[:MAX_NOTE]
