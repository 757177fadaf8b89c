"""The report as MLflow's UI shows it: figures that display, links that resolve there.

`report.md` in the output folder links its figures and `summary.csv` relatively,
which works on disk and on GitHub. MLflow 3.17's artifact viewer renders
markdown at the UI's address, where a relative link points nowhere, and it
never displays markdown images (it prints `[alt](src)` as text, whatever the
URL: seen in headless Chromium). So MLflow gets two files instead:

* `report.md` with every relative link (figures included, as plain links)
  pointing at the server's own artifact route,
  `get-artifact?path=report/<file>&run_uuid=<run>`, relative to the UI's page
  (the UI routes after `#`), so it also works behind a static prefix;
* `report.html`, the same report with its figures embedded as `data:` PNGs:
  the artifact viewer shows HTML in a sandboxed frame, figures included.

The run the report is logged to gets a description (`mlflow.note.content`):
the findings, the summary table and a link to the main figure.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from resnet_exp.analysis.load import Study
from resnet_exp.analysis.report import findings, summary_table

MAX_NOTE = 8000  # MLflow's limit on a tag value
_LINK = re.compile(r"(!?\[[^\]]*\])\(([^)\s]+)\)")
MAIN_FIGURE = "depth_vs_gradient"


def artifact_link(run_id: str, path: str) -> str:
    """A UI-relative URL of one artifact of `run_id`, served by the tracking server."""
    return f"get-artifact?path={quote(path, safe='/')}&run_uuid={run_id}"


def _is_relative(target: str) -> bool:
    return ":" not in target and not target.startswith(("/", "#"))


HTML_NAME = "report.html"
_HTML_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title><style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 1em auto; padding: 0 1em;
       color: #1f2328; line-height: 1.45; }}
table {{ border-collapse: collapse; font-size: 0.85em; margin: 0.8em 0; }}
th, td {{ border: 1px solid #d0d7de; padding: 3px 7px; }}
img {{ max-width: 100%; }}
code {{ background: #f3f4f6; padding: 0 3px; }}
</style></head><body>
{body}
</body></html>
"""


def for_mlflow(markdown: str, run_id: str, folder: str) -> str:
    """`markdown` with every relative link pointed at `folder/<link>` of `run_id`.

    Images become plain links (the viewer would print them as text), and a line
    under the title points at the HTML version, which shows them.
    """

    def swap(match: re.Match) -> str:
        text, target = match.groups()
        if not _is_relative(target):
            return match.group(0)
        return f"{text.lstrip('!')}({artifact_link(run_id, f'{folder}/{target}')})"

    lines = _LINK.sub(swap, markdown).split("\n")
    pointer = (
        f"_The figures are drawn in `{folder}/{HTML_NAME}` (open it in this run's Artifacts); "
        f"below, each figure is a link to its PNG._"
    )
    return "\n".join([*lines[:1], "", pointer, *lines[1:]])


def html_report(markdown: str, folder: Path) -> str | None:
    """`markdown` as one HTML page, its local PNGs embedded; None without markdown-it.

    markdown-it-py comes with Keras (through rich); links to other local files
    become plain text, since the viewer's sandboxed frame cannot follow them.
    """
    try:
        from markdown_it import MarkdownIt
    except ImportError:
        return None

    def inline(match: re.Match) -> str:
        text, target = match.groups()
        path = folder / target
        if not _is_relative(target):
            return match.group(0)
        if text.startswith("!") and path.suffix == ".png" and path.is_file():
            return f"{text}(data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})"
        return f"{text.lstrip('!').strip('[]')} (`{target}`, in this folder)"

    body = MarkdownIt("commonmark").enable("table").render(_LINK.sub(inline, markdown))
    title = markdown.split("\n", 1)[0].lstrip("# ").strip()
    return _HTML_PAGE.format(title=html.escape(title), body=body)


def description(
    study: Study,
    table: pd.DataFrame,
    finals: pd.DataFrame,
    run_id: str,
    folder: str,
    figures: Iterable[str] = (),
    answers: Sequence[str] = (),
) -> str:
    """Findings, the answers to the study's questions (`answers`: markdown lines, e.g. "Skip
    or batch norm?"), summary table and a main-figure link (if drawn), within MLflow's tag
    limit."""
    link = lambda name: artifact_link(run_id, f"{folder}/{name}")  # noqa: E731
    head = (
        f"**Findings** of `make_figures` ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{len(study.runs)} training runs). Full report: *Artifacts* > `{folder}/{HTML_NAME}` "
        f"(with its figures) or [report.md]({link('report.md')})."
    )
    lines = [s if s.startswith("  - ") else f"- {s}" for s in findings(study, table, finals)]
    parts = [head + "\n\n" + "\n".join(lines)]
    if answers:  # headings as bold lines: the description is one block of markdown
        parts.append(
            "\n".join(f"**{a.lstrip('# ')}**" if a.startswith("#") else a for a in answers)
        )
    parts += [
        f"**Summary** (full precision in [summary.csv]({link('summary.csv')})):\n\n"
        + summary_table(table),
    ]
    if MAIN_FIGURE in figures:  # a link: MLflow's markdown views print images as text
        parts.append(
            f"Main figure: [first- and last-layer gradient vs depth]({link(MAIN_FIGURE + '.png')})."
        )
    text = parts[0]
    for part in parts[1:]:  # the findings always; the rest while it fits
        if len(text) + 2 + len(part) <= MAX_NOTE:
            text += "\n\n" + part
    return text[:MAX_NOTE]
