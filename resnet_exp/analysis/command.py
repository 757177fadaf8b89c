"""`make_figures`: regenerate a study's figures and report from MLflow, in one command.

    python scripts/make_figures.py --experiment NAME [--parent RUN_ID] [--out DIR]
                                   [--tracking-uri URI] [--no-log] [--method M]

Writes depth_vs_gradient, depth_vs_accuracy, training_curves, gradient_profile
and gradient_dynamics (PNG + SVG), and, when runs logged lesions or branch
magnitudes, lesion_single, lesion_k and branch_magnitude with a "Block lesions"
section (`lesion_report`), and, when runs logged curvature or loss landscapes,
landscape_contours, landscape_slices and curvature_depth with a "Curvature and
loss landscape" section (`landscape_report`); a study that varies batch norm gets
a "Skip or batch norm?" section (`skip_or_bn`), one with skips on chosen blocks a
"Skips on chosen blocks" section (`placement`); report.md and summary.csv into DIR (default
reports/<experiment>, relative to the current folder), then logs them under
`report/` as artifacts of one MLflow run, so they sit beside the runs in the UI:

* the run given by --parent, when given;
* else the experiment's sweep parent (run_kind=sweep), when it has exactly one
  and every training run in the study is its child;
* else a new run tagged run_kind=report (a new one each time: a report run
  records what was summarised when; the loader never reads report runs back).

The report's header names that run; the copy of report.md logged to MLflow
links its figures through the server (see `mlflow_report`), and the run's
description becomes the findings and the summary table.

Bad input gets a one-line message, never a traceback: an unknown experiment
or parent, an empty experiment, runs still running, runs without gradient
metrics, a study that varies nothing, an output folder that cannot be written.
Whatever can be drawn is drawn; the exit status is 1 only when nothing at all
could be drawn (or the report not written).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from resnet_exp import contract
from resnet_exp.analysis.load import (
    StudyError,
    load_grad_profiles,
    load_study,
    resolve_tracking_uri,
)

ARTIFACT_DIR = "report"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="make_figures",
        description="Regenerate a depth study's figures and report.md from MLflow.",
    )
    parser.add_argument("--experiment", required=True, help="MLflow experiment name")
    parser.add_argument("--parent", metavar="RUN_ID", help="only the children of this sweep run")
    parser.add_argument("--out", type=Path, help="output folder (default: reports/<experiment>)")
    parser.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db)",
    )
    parser.add_argument(
        "--no-log", action="store_true", help="write the files only; log nothing to MLflow"
    )
    parser.add_argument(
        "--method",
        choices=("auto", "sql", "rest", "client"),
        default="auto",
        help="how to read metric histories (default: the store's batched path, else the client)",
    )
    return parser.parse_args(argv)


def default_out(experiment: str) -> Path:
    return Path("reports") / (re.sub(r"[^A-Za-z0-9._-]+", "_", experiment).strip("_") or "study")


def _shape_notes(study) -> list[str]:
    """What the study does not vary, said once, in a line each."""
    depths = sorted(study.usable["depth"].unique())
    archs = sorted(study.usable["arch"].unique())
    if len(depths) == 1 and len(archs) == 1:
        return [
            f"the study varies nothing: one depth ({depths[0]}) and only {archs[0]} nets; "
            f"the figures show single points"
        ]
    if len(depths) == 1:
        return [f"the study has a single depth ({depths[0]}): no trend with depth to draw"]
    if len(archs) == 1:
        return [f"the study has only {archs[0]} nets: no plain vs residual comparison"]
    return []


def _run_name(uri: str, run_id: str) -> str | None:
    try:
        return MlflowClient(uri).get_run(run_id).info.run_name
    except MlflowException:
        return None


def choose_run(study, parent_run_id: str | None) -> tuple[str | None, str]:
    """The run the report belongs to: --parent, else the study's one sweep parent, else None."""
    if parent_run_id is not None:
        return parent_run_id, "the --parent run"
    if len(study.sweep_parents) == 1:
        sweep = study.sweep_parents[0]
        if (study.runs["parent_run_id"] == sweep).all():
            return sweep, "the experiment's sweep parent run"
    return None, "a new report run"


def publish(study, files: list[Path], target: str | None, note: Callable[[str], str]) -> str:
    """Log `files` under report/ of `target` (a new report run if None); return its run id.

    report.md goes in with its links rewritten for MLflow's artifact viewer, with
    report.html beside it (figures embedded), and the run's description becomes
    `note(run_id)` (the findings and summary table).
    """
    from resnet_exp.analysis.mlflow_report import HTML_NAME, for_mlflow, html_report
    from resnet_exp.tracking.describe import provenance_tags

    client = MlflowClient(study.tracking_uri)
    created = target is None
    if created:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
        run = client.create_run(
            study.experiment_id,
            run_name=f"report {stamp}",
            tags={
                contract.RUN_KIND: contract.REPORT,
                "report_runs": str(len(study.runs)),
                **provenance_tags("scripts/make_figures.py"),
            },
        )
        target = run.info.run_id
    try:
        for path in files:
            if path.suffix != ".md":  # figures and summary.csv: the files as written
                client.log_artifact(target, str(path), ARTIFACT_DIR)
                continue
            text = path.read_text()
            page = html_report(text, path.parent)
            if page is not None:
                client.log_text(target, page, f"{ARTIFACT_DIR}/{HTML_NAME}")
            mlflow_text = for_mlflow(text, target, ARTIFACT_DIR)
            client.log_text(target, mlflow_text, f"{ARTIFACT_DIR}/{path.name}")
        client.set_tag(target, contract.NOTE, note(target))
    finally:
        if created:
            client.set_terminated(target, "FINISHED")
    return target


def _question_sections(
    study, table, finals, out: Path, figures: dict, skipped: list[str]
) -> tuple[list[str], list[str]]:
    """The sections a study's design asks for: "Skip or batch norm?" when it varies batch
    norm (`skip_or_bn`), "Skips on chosen blocks" when some net has skips on some blocks
    only (`placement`), block lesions and branch magnitudes when runs logged them
    (`lesion_report`), and curvature and loss landscapes when runs logged them
    (`landscape_report`), the last two with their figures. Returns (the first two, all of
    them): the first two also go into the parent run's description."""
    from resnet_exp.analysis.landscape_data import has_landscape_data, load_landscape
    from resnet_exp.analysis.landscape_figures import draw_landscape_figures
    from resnet_exp.analysis.landscape_report import landscape_section
    from resnet_exp.analysis.lesion_figures import draw_lesion_figures
    from resnet_exp.analysis.lesion_report import has_lesion_data, lesion_section, load_lesions
    from resnet_exp.analysis.placement import placement_section
    from resnet_exp.analysis.skip_or_bn import skip_or_bn_section
    from resnet_exp.analysis.summary import chance_error

    lesions = load_lesions(study) if has_lesion_data(study) else None
    answers = skip_or_bn_section(table, chance_error(finals)) + placement_section(table, lesions)
    lenses = []  # (data, what draws its figures, what writes its section)
    if lesions is not None:
        lenses.append((lesions, draw_lesion_figures, lesion_section))
    if has_landscape_data(study):
        lenses.append((load_landscape(study), draw_landscape_figures, landscape_section))
    sections = list(answers)
    for data, draw, section in lenses:
        drawn, not_drawn = draw(data, out)
        figures.update(drawn)
        skipped += not_drawn
        sections += section(data, drawn)
    return answers, sections


def _fail(message: str) -> int:
    """A one-line message on stderr; exit status 1."""
    print(f"make_figures: {message}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    from resnet_exp.analysis.figures import FORMATS, draw_all
    from resnet_exp.analysis.report import write_report
    from resnet_exp.analysis.summary import run_finals, summarise

    args = parse_args(argv)
    uri = resolve_tracking_uri(args.tracking_uri)
    try:
        study = load_study(args.experiment, args.parent, uri, method=args.method)
    except StudyError as err:
        return _fail(str(err))
    if study.usable.empty:
        counts = ", ".join(f"{n} {s}" for s, n in study.runs["status"].value_counts().items())
        return _fail(
            f"nothing to draw yet: no finished run in {args.experiment!r} ({counts}); "
            f"run again when they finish"
        )
    profiles = load_grad_profiles(study) if study.usable["has_gradients"].any() else None
    finals = run_finals(study)
    table = summarise(study)
    out = args.out or default_out(args.experiment)
    figures, skipped = draw_all(study.epochs, finals, profiles, out)
    answers, sections = _question_sections(study, table, finals, out, figures, skipped)
    notes = [*study.notes, *_shape_notes(study), *skipped]
    target, why = choose_run(study, args.parent)
    if target is not None and study.parent_run_id is None:  # the header names the sweep parent
        study.parent_run_id, study.parent_run_name = target, _run_name(uri, target)
    try:
        report = write_report(study, table, finals, figures, out, notes=notes, sections=sections)
    except OSError as err:
        return _fail(f"cannot write the report to {out}: {err}")
    for note in notes:
        print(f"note: {note}")
    files = [p.with_suffix(f".{fmt}") for p in figures.values() for fmt in FORMATS]
    files += [report, out / "summary.csv"]
    print(
        f"wrote {len(figures)} figure(s) (PNG + SVG), report.md and summary.csv to {out.resolve()}"
    )
    if not args.no_log:
        try:
            from resnet_exp.analysis.mlflow_report import description

            note = partial(
                description,
                study,
                table,
                finals,
                folder=ARTIFACT_DIR,
                figures=figures,
                answers=answers,
            )
            run_id = publish(study, files, target, note)
            print(f"logged them to MLflow run {run_id} ({why}), artifact folder {ARTIFACT_DIR}/")
        except (MlflowException, OSError) as err:
            first = str(err).partition("\n")[0][:200]
            print(f"note: could not log the report to MLflow: {first}")
    return 0 if figures else 1


if __name__ == "__main__":
    sys.exit(main())
