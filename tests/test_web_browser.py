"""The pages in headless Chromium: what they draw, with no console errors and no outside requests.

Screenshots land in tests/artifacts/ (git-ignored) for a person to look at. With
``TRACKER_DOCS_IMAGES=1`` the ``test_docs_image`` cases also (re)write the pictures that the README
and docs/reading-the-panels.md show, into docs/images/ (1200 px wide):

    TRACKER_DOCS_IMAGES=1 python -m pytest tests/test_web_browser.py -k docs_image
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from werkzeug.serving import make_server

from web import create_app

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
DOCS_IMAGES = Path(__file__).parent.parent / "docs" / "images"
RELU_LAYERS = ("relu1", "relu2", "relu3")
LAYERS = ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten", "fc1", "relu3", "fc2"]
TIMEOUT_MS = 15_000
# True when every Plotly graph matching the selector has drawn at least one trace.
PLOTS_DRAWN = """([selector, n]) => {
  const plots = [...document.querySelectorAll(selector)];
  return plots.length >= n && plots.every(
    (gd) => gd.data && gd.data.length > 0 && gd.querySelector(".main-svg"));
}"""


@pytest.fixture(scope="module")
def server(demo_store: Path) -> Iterator[str]:
    """The app over the demo store, served on a free local port from a thread."""
    app = create_app(str(demo_store))
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    thread.join()
    app.extensions["tracker.store"].close()


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    """Headless Chromium from the system package (CI installs it; never `playwright install`)."""
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} is missing: install Debian's chromium package to run browser tests"
        )
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield launched
        launched.close()


@dataclass
class Tab:
    """A page with everything it logged and requested."""

    page: object
    base: str
    problems: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def goto(self, path: str) -> None:
        self.page.goto(self.base + path)

    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlparse(self.page.url).query)

    def wait_plots(self, selector: str, n: int = 1) -> None:
        self.page.wait_for_function(PLOTS_DRAWN, arg=[selector, n], timeout=TIMEOUT_MS)

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def assert_clean(self) -> None:
        assert self.problems == []
        outside = [u for u in self.requests if not u.startswith(f"{self.base}/")]
        assert outside == [], "requests to other servers"


@pytest.fixture
def tab(browser, server: str) -> Iterator[Tab]:  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    watched = Tab(page, server)
    page.on(
        "console",
        lambda m: (
            watched.problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None
        ),
    )
    page.on("pageerror", lambda e: watched.problems.append(f"page error: {e}"))
    page.on("request", lambda r: watched.requests.append(r.url))
    yield watched
    context.close()


def test_runs_page(tab: Tab, demo_runs: dict[str, str]) -> None:
    tab.goto("/")
    rows = tab.page.locator("#runs tbody tr")
    rows.first.wait_for()
    names = rows.locator("td.run-name").all_inner_texts()
    assert sorted(names) == ["healthy", "sick"]
    tab.page.fill("#filter", "sick")
    assert rows.locator("td.run-name").all_inner_texts() == ["sick"]
    tab.page.fill("#filter", "")
    tab.page.locator("#runs thead th[data-key='final_loss'] button").click()  # sort, ascending
    assert rows.locator("td.run-name").all_inner_texts() == ["healthy", "sick"]
    assert tab.query()["sort"] == ["final_loss"] and tab.query()["dir"] == ["asc"]
    assert tab.page.get_attribute("#compare", "aria-disabled") == "true"
    tab.page.check(f"input.pick-run[value='{demo_runs['healthy']}']")
    assert tab.page.inner_text("#compare") == "Compare its epochs"
    assert tab.page.get_attribute("#compare", "href") == f"/compare?runs={demo_runs['healthy']}"
    tab.page.focus(f"input.pick-run[value='{demo_runs['sick']}']")
    tab.page.keyboard.press("Space")  # ticked with the keyboard
    assert tab.page.inner_text("#compare") == "Compare 2 runs"
    # In the order shown: the first run is the reference the others are subtracted from.
    href = tab.page.get_attribute("#compare", "href")
    assert href == f"/compare?runs={demo_runs['healthy']},{demo_runs['sick']}"
    tab.page.locator("#runs tbody tr", has_text="sick").locator(".health-cell .badge").wait_for()
    assert "error" in tab.page.locator("#runs tbody tr", has_text="sick").inner_text()
    tab.screenshot("runs")
    # A click anywhere on a row opens the run.
    tab.page.locator("#runs tbody tr", has_text="healthy").locator("td").nth(2).click()
    tab.page.wait_for_url(f"**/runs/{demo_runs['healthy']}")
    tab.assert_clean()


def _layer_rows(tab: Tab) -> list[str]:
    tab.page.locator("#layers tbody tr").first.wait_for()
    return tab.page.locator("#layers td.layer-name a.layer-link").all_inner_texts()


def _flag_codes(tab: Tab, layer: str) -> str:
    return tab.page.locator(f'#layers tbody tr[data-layer="{layer}"] td.flags').inner_text()


def _finding_badges(tab: Tab) -> dict[str, list[str]]:
    """{layer: [finding codes]} marked in the layer table from the diagnosis."""
    return tab.page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#layers tbody tr')]
               .map((tr) => [tr.dataset.layer,
                             [...tr.querySelectorAll('a.finding-badge')].map((a) => a.textContent)])
               .filter(([, codes]) => codes.length))"""
    )


def _load_sparklines(tab: Tab) -> None:
    """Scroll the table into view (sparklines load lazily) and wait for every row's."""
    tab.page.locator("#layers tbody tr").last.scroll_into_view_if_needed()
    tab.page.wait_for_function(
        "() => [...document.querySelectorAll('td.trends')].every((td) => td.querySelector('svg'))"
    )


def test_run_page_healthy(tab: Tab, demo_runs: dict[str, str]) -> None:
    tab.goto(f"/runs/{demo_runs['healthy']}")
    tab.wait_plots('#metrics .js-plotly-plot[data-metric="loss"]')
    names = tab.page.evaluate(
        "() => document.querySelector('[data-metric=\"loss\"]').data.map((t) => t.name)"
    )
    assert "loss" in names
    assert _layer_rows(tab) == LAYERS
    assert "dead relu" not in _flag_codes(tab, "relu1")
    tab.page.locator("#health:not(.loading)").wait_for()
    tab.page.locator("#app[data-ready='true']").wait_for()
    assert "No problems found" in tab.page.locator("#diagnosis-status").inner_text()
    assert tab.page.locator("#diagnosis").is_hidden()
    assert _finding_badges(tab) == {}
    _load_sparklines(tab)
    tab.screenshot("run_healthy")
    tab.assert_clean()


def test_run_page_sick_shows_dead_relu(tab: Tab, demo_runs: dict[str, str]) -> None:
    tab.goto(f"/runs/{demo_runs['sick']}")
    tab.wait_plots("#metrics .js-plotly-plot", 1)
    assert _layer_rows(tab) == LAYERS
    dead = [layer for layer in RELU_LAYERS if "dead relu" in _flag_codes(tab, layer)]
    assert dead, "the sick run should flag at least one ReLU layer as dead"
    chip = tab.page.locator("td.flags details.chip", has_text="dead relu").first
    chip.locator("summary").click()  # expands to the explanation
    assert "stop learning" in chip.locator("p").inner_text()
    assert "dead relu" in tab.page.locator("#health").inner_text()
    # The diagnosis: each finding with its layer, explanation and suggestion; rows marked.
    tab.page.locator("#app[data-ready='true']").wait_for()
    findings = tab.page.locator("#diagnosis li.finding")
    dead = findings.filter(has_text="dead_relu")
    layers = {dead.nth(i).get_attribute("data-layer") for i in range(dead.count())}
    assert {"relu2", "relu3"} <= layers
    first = findings.first
    assert first.locator("a.finding-layer").get_attribute("href").endswith("/layers/relu2")
    assert "no gradient" in first.locator(".finding-why").inner_text()
    assert "learning rate" in first.locator(".finding-fix").inner_text()
    badges = _finding_badges(tab)
    assert "dead_relu" in badges["relu2"] and "dead_relu" in badges["relu3"]
    badge = tab.page.locator('#layers tr[data-layer="relu3"] a.finding-badge', has_text="dead_relu")
    assert "never fire" in badge.get_attribute("title")
    badge.focus()
    tab.page.keyboard.press("Enter")  # a badge jumps to its finding
    tab.page.wait_for_function("() => location.hash.startsWith('#finding-')")
    _load_sparklines(tab)
    tab.screenshot("run_sick")
    tab.assert_clean()


def _flow(tab: Tab) -> dict:
    """The gradient-flow plot's first trace: type, rows (layers), values and the colour floor."""
    tab.page.locator("#flow-card").scroll_into_view_if_needed()  # it loads when in view
    tab.wait_plots("#flow")
    return tab.page.evaluate(
        """() => { const t = document.getElementById('flow').data;
                   return {type: t[0].type, n: t.length, y: t[0].y, z: t[0].z ?? null,
                           zmin: t[0].zmin ?? null, names: t.map((x) => x.name)}; }"""
    )


@pytest.mark.parametrize("run", ["healthy", "sick"])
def test_gradient_flow(tab: Tab, demo_runs: dict[str, str], run: str) -> None:
    tab.goto(f"/runs/{demo_runs[run]}")
    heat = _flow(tab)
    assert heat["type"] == "heatmap"
    assert heat["y"] == ["conv1", "conv2", "fc1", "fc2"]  # the layers with weights, by depth
    conv1_last = heat["z"][0][-1]
    if run == "sick":  # dead ReLUs: no gradient reaches conv1 at the end, drawn as the floor
        assert conv1_last == heat["zmin"]
        assert "no gradient at all" in tab.page.evaluate(
            "() => document.getElementById('flow').data[0].text[0].at(-1)"
        )
    else:
        assert conv1_last > heat["zmin"]
    tab.screenshot(f"flow_{run}")
    tab.page.check("input[name='flow-view'][value='epochs']")
    tab.page.wait_for_function("() => document.getElementById('flow').data[0].type === 'scatter'")
    assert tab.query()["flow"] == ["epochs"]
    assert _flow(tab)["names"] == ["epoch 0", "epoch 1", "epoch 2"]
    tab.page.check("input[name='flow-quantity'][value='ratio']")
    tab.page.wait_for_function("() => location.search.includes('flowq=ratio')")
    assert "update/weight" in tab.page.locator("#flow-note").inner_text()
    tab.assert_clean()


def _image_types(tab: Tab) -> list[str]:
    """The Plotly trace type drawn in each panel's image, in panel order."""
    return tab.page.evaluate(
        """() => [...document.querySelectorAll('.panel [data-role="image"]')]
               .map((gd) => gd.data[0].type)"""
    )


def _activation_sum(tab: Tab) -> float:
    return tab.page.evaluate(
        """() => document.querySelector('#panel-activation [data-role="image"]').data[0].z
               .flat().reduce((a, v) => a + (v ?? 0), 0)"""
    )


def _wait_step(tab: Tab, step: int) -> None:
    tab.page.wait_for_function(
        """(step) => [...document.querySelectorAll('.panel [data-role="meta"] strong')]
               .filter((s) => s.textContent === `step ${step}`).length === 4""",
        arg=step,
    )


def test_layer_page_conv1(tab: Tab, demo_runs: dict[str, str]) -> None:
    tab.goto(f"/runs/{demo_runs['healthy']}/layers/conv1?step=25")
    tab.page.locator("#app[data-ready='true']").wait_for()
    tab.wait_plots(".panel [data-role='image']", 4)
    tab.wait_plots(".panel [data-role='hist']", 4)
    tab.wait_plots(".panel [data-role='series']", 4)
    assert _image_types(tab) == ["heatmap"] * 4
    _wait_step(tab, 25)
    assert tab.query()["step"] == ["25"]
    before = _activation_sum(tab)
    tab.screenshot("layer_conv1")

    tab.page.click("#next-step")
    _wait_step(tab, 50)
    assert tab.query()["step"] == ["50"]
    assert _activation_sum(tab) != before

    tab.page.locator("h1").click()  # focus outside any form control: arrows move the step
    tab.page.keyboard.press("ArrowLeft")
    _wait_step(tab, 25)
    assert tab.query()["step"] == ["25"]
    assert tab.page.get_attribute("#next-layer", "href").endswith("/layers/relu1?step=25")

    tab.page.select_option("#sample", "3")
    tab.page.wait_for_function("() => new URLSearchParams(location.search).get('sample') === '3'")
    assert "sample 3" in tab.page.locator("#panel-activation [data-role='meta']").inner_text()
    tab.assert_clean()


def test_layer_page_relu1_has_no_parameters(tab: Tab, demo_runs: dict[str, str]) -> None:
    tab.goto(f"/runs/{demo_runs['healthy']}/layers/relu1")
    tab.page.locator("#app[data-ready='true']").wait_for()
    tab.wait_plots("#panel-activation [data-role='image']")
    for quantity in ("weight", "weight_grad"):
        message = tab.page.locator(f"#panel-{quantity} [data-role='message']")
        assert "no parameters" in message.inner_text()
        assert tab.page.locator(f"#panel-{quantity} [data-role='snapshot']").is_hidden()
    assert tab.page.locator("#param-ctl").is_hidden()
    tab.screenshot("layer_relu1")
    tab.assert_clean()


def test_layer_page_dense_layer(tab: Tab, demo_runs: dict[str, str]) -> None:
    tab.goto(f"/runs/{demo_runs['sick']}/layers/fc1?param=bias")
    tab.page.locator("#app[data-ready='true']").wait_for()
    tab.wait_plots(".panel [data-role='image']", 4)
    assert _image_types(tab) == ["heatmap", "heatmap", "bar", "bar"]  # a bias is drawn as bars
    assert tab.page.input_value("#param") == "bias"
    tab.screenshot("layer_fc1_sick")

    tab.page.select_option("#param", "weight")  # the default: it leaves the URL
    tab.page.wait_for_function("() => !new URLSearchParams(location.search).has('param')")
    tab.page.wait_for_function(
        """() => document.querySelector('#panel-weight [data-role="image"]').data[0].type
                 === 'heatmap'"""
    )
    tab.assert_clean()


def _trace(tab: Tab, selector: str, i: int = 0) -> dict:
    """Trace ``i`` of the Plotly graph at ``selector``: type, name, x and the size of z."""
    return tab.page.evaluate(
        """([selector, i]) => { const t = document.querySelector(selector).data[i];
               return {type: t.type, name: t.name ?? null, x: t.x ?? null,
                       rows: t.z ? t.z.length : null}; }""",
        [selector, i],
    )


def test_layer_page_probe_inputs_and_histogram_over_time(
    tab: Tab, demo_runs: dict[str, str]
) -> None:
    tab.goto(f"/runs/{demo_runs['healthy']}/layers/conv2?step=25")
    tab.page.locator("#app[data-ready='true']").wait_for()
    _wait_step(tab, 25)
    # Histogram over time: a heatmap steps x bins, drawn when scrolled into view.
    tab.page.locator("#hist-time-card").scroll_into_view_if_needed()
    tab.wait_plots("#hist-time")
    heat = _trace(tab, "#hist-time")
    assert heat["type"] == "heatmap"
    assert heat["x"] == list(range(0, 60, 5))  # histogram_every=5 in the demo
    assert "12 histograms of the activation" in tab.page.inner_text("#hist-time-note")
    tab.page.check("input[name='hist-quantity'][value='weight_grad']")
    tab.page.wait_for_function("() => location.search.includes('hist=weight_grad')")
    tab.page.wait_for_function(
        "() => document.getElementById('hist-time-note').textContent.includes('weight gradient')"
    )

    # Probe inputs: the same eight held-out digits at every snapshot step.
    assert tab.page.locator("#probe-ctl").is_visible()
    before = _activation_sum(tab)
    tab.page.select_option("#probe", "1")
    tab.page.wait_for_function("() => location.search.includes('probe=1')")
    tab.page.wait_for_function(
        """() => document.querySelector('#panel-activation [data-role="meta"]').textContent
                 .includes('probe inputs')"""
    )
    _wait_step(tab, 25)
    assert _activation_sum(tab) != before
    assert "probe inputs" not in tab.page.inner_text("#panel-weight [data-role='meta']")
    tab.page.check("input[name='hist-quantity'][value='activation']")
    tab.page.wait_for_function(
        "() => document.getElementById('hist-time-note').textContent.includes('probe inputs')"
    )
    assert _trace(tab, "#hist-time")["x"] == [0, 25, 50]  # a probe pass at every snapshot
    tab.page.reload()  # the state survives in the URL
    tab.page.locator("#app[data-ready='true']").wait_for()
    assert tab.page.input_value("#probe") == "1"
    assert tab.page.is_checked("input[name='hist-quantity'][value='activation']")
    tab.screenshot("layer_conv2_probe")
    tab.assert_clean()


def _legend(tab: Tab, selector: str) -> list[str]:
    """Names of the traces of a Plotly graph that show in its legend."""
    return tab.page.evaluate(
        """(selector) => document.querySelector(selector).data
               .filter((t) => t.showlegend !== false).map((t) => t.name)""",
        selector,
    )


def _compare_ready(tab: Tab) -> None:
    tab.page.locator("#app[data-ready='true']").wait_for()
    tab.wait_plots("#curves")
    tab.wait_plots("#overlay")
    tab.wait_plots("#diff")
    tab.page.locator("#snapshots figure .js-plotly-plot").first.wait_for()


def test_compare_runs_shows_the_sick_run_s_dead_layer(tab: Tab, demo_runs: dict[str, str]) -> None:
    healthy, sick = demo_runs["healthy"], demo_runs["sick"]
    tab.goto(f"/compare?runs={healthy},{sick}")
    _compare_ready(tab)
    # The layers that differ most: the dead ReLU first, flagged in the sick run only.
    top = tab.page.locator("#differ tbody tr").first
    assert top.get_attribute("data-layer") == "relu2"
    flags = top.locator("td.flags").all_inner_texts()
    assert flags[0] == "—" and "dead relu" in flags[1]
    assert tab.query()["layer"] == ["relu2"] and tab.query()["quantity"] == ["activation"]
    # Overlaid curves, overlaid and subtracted histograms.
    assert _legend(tab, "#curves") == ["healthy", "sick"]
    assert _legend(tab, "#overlay") == ["healthy", "sick"]
    assert _legend(tab, "#diff") == ["sick − healthy"]
    # Snapshots side by side and the difference image: the sick run's relu2 is all zeros.
    figures = tab.page.locator("#snapshots figure")
    assert figures.count() == 3
    assert "every value is exactly 0" in figures.nth(1).inner_text()
    assert "sick larger" in figures.nth(2).inner_text()
    assert "probe inputs" in tab.page.inner_text("#snapshots-meta")
    diff = tab.page.evaluate(
        """() => document.querySelector('#snapshots figure.difference .js-plotly-plot')
               .data[0].z.flat().filter((v) => v !== null)"""
    )
    healthy_z = tab.page.evaluate(
        """() => document.querySelectorAll('#snapshots figure .js-plotly-plot')[0]
               .data[0].z.flat().filter((v) => v !== null)"""
    )
    assert diff == pytest.approx([-v for v in healthy_z])  # sick (0) minus healthy
    tab.screenshot("compare_runs")

    # The moment slider: one step back, and the histograms and snapshots follow.
    step = int(tab.query()["step"][0])
    tab.page.click("#prev-step")
    tab.page.wait_for_function(
        "(step) => new URLSearchParams(location.search).get('step') !== String(step)", arg=step
    )
    earlier = int(tab.query()["step"][0])
    assert earlier < step
    tab.page.wait_for_function(
        "(s) => document.getElementById('overlay-meta').textContent.includes(`step ${s}`)",
        arg=earlier,
    )

    # Another row of the list, chosen with the keyboard, fills the views below.
    tab.page.locator('#differ tbody tr[data-layer="relu3"] button.link').focus()
    tab.page.keyboard.press("Enter")
    tab.page.wait_for_function("() => location.search.includes('layer=relu3')")
    tab.page.wait_for_function(
        "() => document.getElementById('curves-title').textContent.startsWith('relu3')"
    )
    tab.page.select_option("#quantity", "weight_grad")  # relu3 has no weights: said in the page
    tab.page.locator("#curves-status", has_text="no parameters").wait_for()
    tab.assert_clean()


def test_compare_epochs_of_one_run(tab: Tab, demo_runs: dict[str, str]) -> None:
    tab.goto(f"/compare?runs={demo_runs['sick']}")
    _compare_ready(tab)
    assert tab.query()["epochs"] == ["0,2"]  # the first and the last epoch by default
    assert _legend(tab, "#curves") == ["sick · epoch 0", "sick · epoch 2"]
    assert "steps since the epoch began" in tab.page.evaluate(
        "() => document.getElementById('curves').layout.xaxis.title.text"
    )
    assert tab.page.inner_text("#moment-label") == "the end of each epoch"
    tab.page.fill("#epochs", "0, 1")
    tab.page.keyboard.press("Enter")
    tab.page.wait_for_function("() => location.search.includes('epochs=0,1')")
    tab.page.wait_for_function(
        """() => document.getElementById('curves').data
               .some((t) => t.name === 'sick · epoch 1')"""
    )
    assert "sick · epoch 1" in tab.page.inner_text("#legend")
    tab.page.click("#prev-step")
    tab.page.wait_for_function("() => location.search.includes('offset=')")
    tab.screenshot("compare_epochs")
    tab.page.fill("#epochs", "0, 7")
    tab.page.click("#epochs-apply")
    assert "no epoch 7" in tab.page.locator("#page-message.error").inner_text()
    tab.assert_clean()


def test_compare_shows_api_errors_in_the_page(tab: Tab, demo_runs: dict[str, str]) -> None:
    body = '{"error": {"code": 503, "type": "unavailable", "message": "catalog is locked"}}'
    tab.page.route(
        "**/api/v1/compare/layers?*",
        lambda route: route.fulfill(status=503, body=body, content_type="application/json"),
    )
    tab.goto(f"/compare?runs={demo_runs['healthy']},{demo_runs['sick']}")
    message = tab.page.locator("#differ-status.error")
    message.wait_for()
    assert "catalog is locked" in message.inner_text()
    tab.wait_plots("#curves")  # the rest of the page still works


def test_api_error_is_shown(tab: Tab) -> None:
    body = '{"error": {"code": 503, "type": "unavailable", "message": "catalog is locked"}}'
    tab.page.route(
        "**/api/v1/runs?*",
        lambda route: route.fulfill(status=503, body=body, content_type="application/json"),
    )
    tab.goto("/")
    message = tab.page.locator("#status.error")
    message.wait_for()
    assert "catalog is locked" in message.inner_text()


def test_empty_state(tab: Tab) -> None:
    tab.page.route(
        "**/api/v1/runs?*",
        lambda route: route.fulfill(
            status=200, body='{"runs": []}', content_type="application/json"
        ),
    )
    tab.goto("/")
    tab.page.locator("#empty").wait_for()
    assert "tracker demo" in tab.page.locator("#empty").inner_text()
    tab.screenshot("runs_empty")
    tab.assert_clean()


# -- pictures for the README and docs/reading-the-panels.md --------------------------------------

DocShot = tuple[str, str, str, Callable[["Tab"], None] | None, tuple[str, str | None]]


def _scroll_to(selector: str) -> Callable[[Tab], None]:
    def wait(tab: Tab) -> None:
        tab.page.locator(selector).scroll_into_view_if_needed()
        tab.wait_plots(f"{selector} .js-plotly-plot")

    return wait


# (file name, run, path after /runs/<id> or a /compare query, extra wait, (top, bottom) elements:
# the picture spans from the top of the first to the bottom of the second; None: to the end).
DOCS: list[DocShot] = [
    ("guide-layer-healthy-conv2", "healthy", "/layers/conv2?step=50", None, ("main", ".panels")),
    ("guide-layer-sick-conv2", "sick", "/layers/conv2?step=50", None, ("main", ".panels")),
    ("guide-flow-healthy", "healthy", "", _scroll_to("#flow-card"), ("#flow-card", "#flow-card")),
    ("guide-flow-sick", "sick", "", _scroll_to("#flow-card"), ("#flow-card", "#flow-card")),
    ("guide-run-sick-diagnosis", "sick", "", None, ("main", "#diagnosis-card")),
    ("run-sick", "sick", "", _scroll_to("#flow-card"), ("main", "#flow-card")),
    ("compare-healthy-sick", "compare", "", None, ("main", None)),
]
DOCS_WIDTH = 1200


@pytest.mark.skipif(
    not os.environ.get("TRACKER_DOCS_IMAGES"),
    reason="set TRACKER_DOCS_IMAGES=1 to rewrite the pictures in docs/images/",
)
@pytest.mark.parametrize("shot", DOCS, ids=[d[0] for d in DOCS])
def test_docs_image(browser, server: str, demo_runs: dict[str, str], shot: DocShot) -> None:  # type: ignore[no-untyped-def]
    name, run, path, wait, (top, bottom) = shot
    context = browser.new_context(viewport={"width": DOCS_WIDTH, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        tab = Tab(page, server)
        if run == "compare":
            tab.goto(f"/compare?runs={demo_runs['healthy']},{demo_runs['sick']}")
            _compare_ready(tab)
        else:
            tab.goto(f"/runs/{demo_runs[run]}{path}")
            page.locator("#app[data-ready='true']").wait_for()
        if wait:
            wait(tab)
        page.evaluate("() => window.scrollTo(0, 0)")  # sticky bars back in their place
        page.wait_for_timeout(300)
        box = page.evaluate(
            """([top, bottom]) => {
                 const a = document.querySelector(top).getBoundingClientRect();
                 const b = bottom ? document.querySelector(bottom).getBoundingClientRect()
                                  : {bottom: document.documentElement.scrollHeight};
                 return {y: a.top + window.scrollY, bottom: b.bottom + window.scrollY}; }""",
            [top, bottom],
        )
        pad = 0 if top == "main" else 8  # <main> has its own padding
        clip = {
            "x": 0,
            "y": max(0, box["y"] - pad),
            "width": DOCS_WIDTH,
            "height": box["bottom"] - box["y"] + pad + 8,
        }
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_IMAGES / f"{name}.png"), clip=clip, full_page=True)
    finally:
        context.close()
