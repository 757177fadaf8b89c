"""The report's MLflow copies: links through the server, figures embedded in the HTML."""

from __future__ import annotations

import re

from resnet_exp.analysis.mlflow_report import artifact_link, for_mlflow, html_report

REPORT = """# Depth study: demo

See [summary.csv](summary.csv) and [the paper](https://arxiv.org/abs/1512.03385).

![a figure](fig.png)
"""


def test_markdown_links_go_through_the_server_and_images_become_links():
    text = for_mlflow(REPORT, "abc123", "report")
    assert "(get-artifact?path=report/summary.csv&run_uuid=abc123)" in text
    assert "[a figure](get-artifact?path=report/fig.png&run_uuid=abc123)" in text
    assert "![" not in text  # MLflow's markdown viewer would print it as text
    assert "(https://arxiv.org/abs/1512.03385)" in text
    assert text.splitlines()[0] == "# Depth study: demo"
    assert artifact_link("r", "report/a b.png") == "get-artifact?path=report/a%20b.png&run_uuid=r"


def test_html_report_embeds_local_figures_and_leaves_no_relative_link(tmp_path):
    (tmp_path / "fig.png").write_bytes(b"\x89PNG\r\n\x1a\nnot-really")
    page = html_report(REPORT, tmp_path)
    assert page is not None and page.startswith("<!doctype html>")
    assert page.count('src="data:image/png;base64,') == 1
    assert 'href="https://arxiv.org/abs/1512.03385"' in page
    assert not re.search(r'(src|href)="(?!data:|https?:|#)', page)
    assert "summary.csv" in page  # named, as text: the viewer's frame cannot follow it


def test_ui_links_open_each_study_in_model_training_mode(client):
    from resnet_exp.tracking.ui import study_links

    exp = client.create_experiment("depth_sweep")
    client.create_experiment("empty")
    sweep = client.create_run(exp, run_name="sweep-abc123", tags={"run_kind": "sweep"})
    lines = study_links(client, "http://127.0.0.1:5000")
    assert lines[0] == (
        f"depth_sweep: http://127.0.0.1:5000/#/experiments/{exp}?workflowType=machine_learning"
    )
    assert lines[1].endswith(
        f"/#/experiments/{exp}/runs/{sweep.info.run_id}?workflowType=machine_learning"
    )
    assert not any(line.startswith("empty") for line in lines)  # no runs: no link
