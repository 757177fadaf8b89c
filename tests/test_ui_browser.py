"""What a user sees of a study in MLflow's UI, in headless Chromium over a real `mlflow ui`.

A real small study (depths 8 and 14, plain and residual, 3 epochs on synthetic data),
each run summarised (`tracking.summaries.log_run_summary`), the study's view saved
(`tracking.ui.save_study_view`), as the job and the sweeper do, and its report made
(`scripts/make_figures.py`); then the links `scripts/ui_links.py` prints, and the
artifacts, opened as a user would:

- the table link: the finding's columns (depth, arch, gradient ratio at initialisation,
  final train and val errors), in that order, the study's training runs only, in depth
  order, with the values the store holds;
- the charts link: the first chart section is "Finding", its bar charts plot every run,
  in the table's order, with the store's values and the runs' colours (plain red, residual
  blue), then `grad_first_last_ratio` per epoch on a log axis;
- the experiments list: the description starts with a plain sentence;
- a training run's artifacts: the picture of every epoch's gradient profile shows whole,
  without scrolling;
- the sweep parent's `report/report.md` in a markdown viewer about 900 px wide: no header
  of the summary table is cut ("train er…": MLflow's viewer gives every column the same
  width and ellipsises what does not fit).

It is also the check that the saved view's format (`resnet_exp.compat`, MLflow UI
section) is still the UI's: a view the UI no longer reads fails here, by name.

Screenshots of each page go to `$RESNET_EXP_TEST_ARTIFACTS/ui` (CI keeps them), else to the
test's temporary folder; with `RESNET_EXP_UPDATE_SCREENSHOTS=1` also to `docs/figures/ui/`,
the pictures docs/ui.md and the README show. Needs Chromium, chromedriver and selenium
(Debian: `apt-get install chromium chromium-driver`; `pip install selenium`).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY, copy_store, run_train
from mlflow.tracking import MlflowClient

from resnet_exp import contract
from resnet_exp.tracking.summaries import log_run_summary
from resnet_exp.tracking.ui import MODEL_TRAINING, save_study_view

pytestmark = pytest.mark.slow

CHROMIUM = next(
    filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
)
CHROMEDRIVER = shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - depends on the machine
    webdriver = None

if webdriver is None:
    pytestmark = [pytestmark, pytest.mark.skip(reason="needs selenium (pip install selenium)")]
elif not (CHROMIUM and CHROMEDRIVER):
    pytestmark = [
        pytestmark,
        pytest.mark.skip(
            reason="needs Chromium and chromedriver on PATH "
            "(Debian: apt-get install chromium chromium-driver)"
        ),
    ]

DEPTHS = (8, 14)
WAIT_S = 90  # the longest a page may take to show what is checked (2 loaded cores)
# MLflow's assistant panel opens over the page on a first visit: closed, as a returning
# user has it (localStorage keys of MLflow 3.17's UI; only the screenshots need it)
QUIET_UI = {
    "mlflow.assistant.panelOpen_v1": "false",
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _shots_dir(tmp_path_factory) -> Path:
    root = os.environ.get("RESNET_EXP_TEST_ARTIFACTS")
    folder = Path(root) / "ui" if root else tmp_path_factory.mktemp("ui-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def study(tmp_path_factory, empty_store):
    """A real small study in a fresh store, summarised and with its view, served by a real
    `mlflow ui` (started while the study trains); yields what the checks need."""
    folder = tmp_path_factory.mktemp("ui-study")
    uri = copy_store(empty_store, folder)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_TRACKING_URI": uri}
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with open(folder / "ui.log", "w") as log:
        server = subprocess.Popen(command, env=env, cwd=folder, stdout=log, stderr=log)
    try:
        depths = "model.depth=" + ",".join(map(str, DEPTHS))
        tiny = [a for a in TINY if not a.startswith(("model.depth=", "trainer.epochs="))]
        sweep = run_train(
            "-m", *tiny, depths, "model.residual=true,false", "trainer.epochs=3",
            env={"MLFLOW_TRACKING_URI": uri}, cwd=folder,
        )  # fmt: skip
        assert sweep.returncode == 0, sweep.stderr[-3000:]
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "make_figures.py"), "--experiment",
             "resnet-exp", "--out", str(folder / "report")],
            capture_output=True, text=True, env=env, cwd=folder, timeout=600, check=True,
        )  # fmt: skip
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("resnet-exp")
        eid = exp.experiment_id
        children = client.search_runs([eid], f"tags.{contract.RUN_KIND} = '{contract.TRAIN}'")
        summaries = {r.info.run_id: log_run_summary(client, r.info.run_id) for r in children}
        (sweep_id,) = {r.data.tags[contract.SWEEP_ID] for r in children}
        save_study_view(client, eid, sweep_id)
        links = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "ui_links.py"), "--tracking-uri", uri,
             "--url", base],
            capture_output=True, text=True, env=env, cwd=folder, timeout=300, check=True,
        ).stdout  # fmt: skip
        from tracking_server import wait_until_ready

        wait_until_ready(base)
        runs = {r.info.run_id: client.get_run(r.info.run_id) for r in children}
        (parent,) = client.search_runs([eid], f"tags.{contract.RUN_KIND} = '{contract.SWEEP}'")
        yield {
            "base": base,
            "experiment_id": eid,
            "links": links,
            "runs": runs,
            "summaries": summaries,
            "parent": parent.info.run_name,
            "parent_id": parent.info.run_id,
            "shots": _shots_dir(tmp_path_factory),
        }
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(study):
    options = webdriver.ChromeOptions()
    profile = tempfile.mkdtemp(prefix="chromium-")
    for flag in [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--hide-scrollbars", "--window-size=1600,1200", f"--user-data-dir={profile}",
    ]:  # fmt: skip
        options.add_argument(flag)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(f"{study['base']}/health")  # the UI's origin, for its localStorage
        for key, value in QUIET_UI.items():
            driver.execute_script("localStorage.setItem(arguments[0], arguments[1])", key, value)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _link(links: str, label: str) -> str:
    found = re.search(rf"{label}: (http\S+)", links)
    assert found, f"ui_links.py printed no '{label}' link:\n{links}"
    return found.group(1)


def _open(driver, url: str, ready, what: str):
    """Open `url` and wait until `ready(driver)` returns something true; return it."""
    driver.get("about:blank")
    driver.get(url)
    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.5).until(ready)
    except Exception:
        seen = getattr(ready, "last", None)  # what the check last read, else the page's text
        if seen is None:
            seen = driver.execute_script("return document.body ? document.body.innerText : ''")
        pytest.fail(f"{what} not shown within {WAIT_S} s at {url}; last seen:\n{seen!s:.3000}")


def _shoot(driver, study, name: str, height: int, width: int = 1600) -> None:
    """A screenshot at `width` x `height`; the window's size is then what it was."""
    before = driver.get_window_size()
    driver.set_window_size(width, height)
    time.sleep(1.0)  # let the resized charts redraw
    path = study["shots"] / f"{name}.png"
    driver.save_screenshot(str(path))
    if os.environ.get("RESNET_EXP_UPDATE_SCREENSHOTS") == "1":
        docs = ROOT / "docs" / "figures" / "ui"
        docs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, docs / path.name)
    driver.set_window_size(before["width"], before["height"])


def _depths(study, names: list[str]) -> list[int]:
    depth = {r.info.run_name: int(r.data.tags[contract.DEPTH]) for r in study["runs"].values()}
    return [depth[name] for name in names]


def _check_depth_order(study, names: list[str], what: str) -> None:
    """Every training run of the study once, in depth order (the UI breaks ties itself)."""
    every = sorted(r.info.run_name for r in study["runs"].values())
    assert sorted(names) == every, f"{what}: the study's training runs, and only them: {names}"
    depths = _depths(study, names)
    assert depths == sorted(depths), f"{what}: in depth order: {names}"


# What the table shows, in the order a user sees it (by position on screen: ag-grid's DOM
# order is not its display order): the column ids, and per row its cells by column id.
TABLE_JS = """
const byLeft = (a, b) => a.getBoundingClientRect().left - b.getBoundingClientRect().left;
const byTop = (a, b) => a.getBoundingClientRect().top - b.getBoundingClientRect().top;
const cells = row => Object.fromEntries(Array.from(row.querySelectorAll('.ag-cell'))
  .map(c => [c.getAttribute('col-id'), c.innerText.trim()]));
return {
  columns: Array.from(document.querySelectorAll('.ag-header-cell')).sort(byLeft)
    .map(h => h.getAttribute('col-id')).filter(Boolean),
  names: Array.from(document.querySelectorAll('.ag-pinned-left-cols-container .ag-row'))
    .sort(byTop).map(r => r.innerText),
  rows: Array.from(document.querySelectorAll('.ag-center-cols-container .ag-row'))
    .sort(byTop).map(cells),
};
"""
FINDING_COLUMNS = [
    "metrics.`depth`", "tags.`arch`", "metrics.`init_grad_first_last_ratio`",
    "metrics.`final_train_error`", "metrics.`final_val_error`",
]  # fmt: skip


def _names(study, texts: list[str]) -> list[str]:
    """The run names in `texts` (rows' texts), in their order."""
    known = {r.info.run_name for r in study["runs"].values()} | {study["parent"]}
    return [next((w for w in t.split() if w in known), t) for t in texts]


def test_the_table_link_shows_the_finding_in_depth_order(study, browser):
    count = len(study["runs"])

    def table(driver):  # the rows, and the finding's columns
        shown = table.last = driver.execute_script(TABLE_JS)
        columns = set(FINDING_COLUMNS) <= set(shown["columns"])
        filled = [r for r in shown["rows"] if r.get(FINDING_COLUMNS[0])]
        return shown if columns and len(filled) == len(shown["names"]) == count else None

    shown = _open(browser, _link(study["links"], "table"), table, "the finding's rows and columns")
    _shoot(browser, study, "1_finding_table", 700)
    columns = [c for c in shown["columns"] if c in FINDING_COLUMNS]
    assert columns == FINDING_COLUMNS, f"the finding's columns, in order: {shown['columns']}"
    names = _names(study, shown["names"])
    assert study["parent"] not in names, "the sweep's parent is filtered out"
    _check_depth_order(study, names, "the table's rows")
    by_name = {r.info.run_name: r for r in study["runs"].values()}
    keys = ["depth", "init_grad_first_last_ratio", "final_train_error", "final_val_error"]
    for name, cells in zip(names, shown["rows"], strict=True):
        run = by_name[name]
        summary = study["summaries"][run.info.run_id]
        assert cells["tags.`arch`"] == run.data.tags[contract.ARCH], f"{name}: {cells}"
        numbers = [float(cells[f"metrics.`{key}`"]) for key in keys]
        assert numbers == pytest.approx([summary[k] for k in keys]), f"{name}: {cells}"


CHARTS_JS = """
const all = id => Array.from(document.querySelectorAll(`[data-testid=${id}]`));
const byTop = (a, b) => a.getBoundingClientRect().top - b.getBoundingClientRect().top;
const sections = all('experiment-view-compare-runs-section-header').sort(byTop)
  .map(e => e.innerText.split('\\n')[0]);
const cards = all('experiment-view-compare-runs-card');
return {
  sections: sections,
  runs: Array.from(document.querySelectorAll('.ag-pinned-left-cols-container .ag-row'))
    .sort(byTop).map(r => r.innerText),
  cards: cards.map(card => {
    const plot = card.querySelector('.js-plotly-plot');
    const layout = plot && plot._fullLayout;
    return {
      title: card.innerText.split('\\n')[0],
      yaxis: layout ? layout.yaxis.type : null,
      traces: plot && plot.data ? plot.data.map(t => ({
        type: t.type, name: t.name || null, x: t.x, y: t.y,
        color: t.marker ? t.marker.color : null,
      })) : null,
    };
  }),
};
"""


def test_the_charts_link_opens_on_the_finding_with_every_run(study, browser):
    runs = study["runs"]
    name_of = {i: r.info.run_name for i, r in runs.items()}
    bars = ["init_grad_first_last_ratio", "final_train_error", "final_val_error"]

    def charts(driver):
        shown = charts.last = driver.execute_script(CHARTS_JS)
        first = shown["cards"][: len(bars) + 2]  # the bars, the line, the scatter
        drawn = len(first) == len(bars) + 2 and all(c["traces"] for c in first)
        return shown if shown["sections"] and drawn and shown["runs"] else None

    shown = _open(browser, _link(study["links"], "charts"), charts, "the Finding charts")
    _shoot(browser, study, "2_finding_charts", 1250)
    assert shown["sections"][0] == "Finding", f"the first chart section: {shown['sections']}"
    listed = _names(study, shown["runs"])
    _check_depth_order(study, listed, "the run list beside the charts")
    cards = shown["cards"]
    assert [c["title"] for c in cards[: len(bars) + 1]] == [*bars, "grad_first_last_ratio"]
    for card, key in zip(cards, bars, strict=False):
        (trace,) = card["traces"]
        assert trace["type"] == "bar", card["title"]
        plotted = [name_of[i] for i in reversed(trace["y"])]  # plotly: first bar at the bottom
        assert plotted == listed, f"{key}: every run, in the list's order (top to bottom)"
        values = dict(zip(trace["y"], trace["x"], strict=True))
        for run_id, value in values.items():
            assert value == pytest.approx(study["summaries"][run_id][key]), key
        colors = dict(zip(trace["y"], trace["color"], strict=True))
        assert colors == {i: runs[i].data.tags[contract.RUN_COLOR] for i in trace["y"]}
    line = cards[len(bars)]
    assert line["yaxis"] == "log", "grad_first_last_ratio per epoch on a log axis"
    assert {t["name"] for t in line["traces"]} == set(listed), "every run's line is drawn"
    # then depth against the ratio at initialisation, a point per run
    scatter = cards[len(bars) + 1]
    assert scatter["title"] == "depth vs. init_grad_first_last_ratio", scatter["title"]
    points = sorted(
        (float(x), round(float(y), 6))
        for t in scatter["traces"] or []
        for x, y in zip(t["x"] or [], t["y"] or [], strict=True)
    )
    expected = sorted(
        (float(s["depth"]), round(float(s["init_grad_first_last_ratio"]), 6))
        for s in study["summaries"].values()
    )
    assert points == expected, "every run's (depth, ratio at init) is a point"
    colors = {r.info.run_name: r.data.tags[contract.RUN_COLOR] for r in runs.values()}
    for name, color in colors.items():  # plain red, residual blue
        red, blue = int(color[1:3], 16), int(color[5:7], 16)
        assert (red > blue) == ("plain" in name), f"{name}: {color}"


def test_the_experiments_list_starts_with_a_plain_sentence(study, browser):
    url = f"{study['base']}/#/experiments?workflowType=machine_learning"

    def listed(driver):
        text = driver.execute_script("return document.body.innerText")
        return text if "resnet-exp" in text and "Plain vs residual" in text else None

    text = _open(browser, url, listed, "the experiments list")
    _shoot(browser, study, "3_experiments_list", 500)
    line = next(x for x in text.splitlines() if "Plain vs residual" in x)
    assert line.startswith("Plain vs residual by depth"), line


def _artifact_url(study, run_id: str, path: str) -> str:
    """A run's artifact, opened in the run page's artifact viewer."""
    run = f"{study['base']}/#/experiments/{study['experiment_id']}/runs/{run_id}"
    return f"{run}/artifacts/{path}?{MODEL_TRAINING}"


# The artifact viewer's picture: its natural size and where it is on screen
IMAGE_JS = """
const image = Array.from(document.querySelectorAll('img'))
  .find(i => i.naturalWidth > 0 && i.getBoundingClientRect().width > 0);
if (!image) return null;
const r = image.getBoundingClientRect();
return {natural: [image.naturalWidth, image.naturalHeight],
        shown: [r.left, r.top, r.right, r.bottom],
        viewport: [window.innerWidth, window.innerHeight],
        tree: Array.from(document.querySelectorAll('li')).map(e => e.innerText.split('\\n')[0])};
"""


def test_a_training_run_shows_every_epochs_profile_in_one_picture(study, browser):
    name = "d14-plain"  # the deepest plain net: the profile that changes most
    run_id = next(i for i, r in study["runs"].items() if r.info.run_name == name)
    url = _artifact_url(study, run_id, contract.PROFILE_ALL_EPOCHS_IMAGE)

    def picture(driver):
        shown = picture.last = driver.execute_script(IMAGE_JS)
        return shown

    browser.set_window_size(1600, 900)  # the screenshot's size: in view at that height
    try:
        _open(browser, url, picture, f"{name}'s {contract.PROFILE_ALL_EPOCHS_IMAGE}")
        _shoot(browser, study, "4_profile_all_epochs", 900)
        shown = browser.execute_script(IMAGE_JS)  # as the screenshot has it, settled
    finally:
        browser.set_window_size(1600, 1200)
    assert shown["natural"] == [800, 480], shown
    left, top, right, bottom = shown["shown"]
    width, height = shown["viewport"]
    assert left >= 0 and right <= width and top >= 0 and bottom <= height, (
        f"the picture is on screen without scrolling: {shown}"
    )
    assert right - left >= 600, f"shown at a readable size: {shown}"
    tree = shown["tree"]
    assert contract.PROFILE_EPOCH_IMAGES in tree and contract.PROFILE_ALL_EPOCHS_IMAGE in tree


# The summary table of the report in the markdown viewer: each header's text, the width it
# has and the width it needs; the table's width and the width of what scrolls it.
REPORT_TABLE_JS = """
const table = Array.from(document.querySelectorAll('[role=table]')).find(t =>
  Array.from(t.querySelectorAll('[role=columnheader]')).some(h => h.innerText.trim() === 'depth'));
if (!table) return null;
table.scrollIntoView({block: 'center'});
let scroller = table.parentElement;
while (scroller && getComputedStyle(scroller).overflowX === 'visible') {
  scroller = scroller.parentElement;
}
return {
  viewer: scroller.clientWidth, table: table.scrollWidth,
  headers: Array.from(table.querySelectorAll('[role=columnheader]')).map(h => {
    const text = h.querySelector('span') || h;
    return {text: h.innerText.trim(), has: text.clientWidth, needs: text.scrollWidth};
  }),
};
"""


def test_the_reports_summary_table_fits_a_900_px_viewer(study, browser):
    """At a 1500 px wide window the markdown viewer is about 900 px wide (MLflow 3.17.2)."""
    browser.set_window_size(1500, 800)
    try:
        url = _artifact_url(study, study["parent_id"], "report/report.md")
        _open(browser, url, lambda d: d.execute_script(REPORT_TABLE_JS), "the summary table")
        _shoot(browser, study, "5_report_table", 800, width=1500)
        shown = browser.execute_script(REPORT_TABLE_JS)  # as the screenshot has it, settled
    finally:
        browser.set_window_size(1600, 1200)
    assert 850 <= shown["viewer"] <= 950, f"a viewer about 900 px wide: {shown['viewer']} px"
    headers = [h["text"] for h in shown["headers"]]
    assert headers[:3] == ["depth", "net", "train %"], headers
    cut = [h for h in shown["headers"] if h["needs"] > h["has"]]
    assert not cut, f"headers cut in a {shown['viewer']} px viewer: {cut}"
    assert shown["table"] <= shown["viewer"], f"the table scrolls sideways: {shown}"
