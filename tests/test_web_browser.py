"""The pages in headless Chromium: what they draw, with no console errors and no outside requests.

Screenshots land in tests/artifacts/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from werkzeug.serving import make_server

from web import create_app

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
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
    tab.screenshot("runs")
    # A click anywhere on a row opens the run.
    tab.page.locator("#runs tbody tr", has_text="healthy").locator("td").nth(2).click()
    tab.page.wait_for_url(f"**/runs/{demo_runs['healthy']}")
    tab.assert_clean()


def _layer_rows(tab: Tab) -> list[str]:
    tab.page.locator("#layers tbody tr").first.wait_for()
    return tab.page.locator("#layers td.layer-name").all_inner_texts()


def _flag_codes(tab: Tab, layer: str) -> str:
    row = tab.page.locator(
        "#layers tbody tr", has=tab.page.locator(f"td.layer-name >> text='{layer}'")
    )
    return row.locator("td.flags").inner_text()


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
    _load_sparklines(tab)
    tab.screenshot("run_sick")
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
