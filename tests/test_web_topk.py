"""The top inputs page in Chromium: grids of patches per channel, compared across runs."""

from __future__ import annotations

import os
from pathlib import Path

import tracker
from tests.test_web_browser import Tab, browser, server, tab  # noqa: F401  (fixtures)

DOCS_IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"


def test_top_inputs_grid_and_comparison(
    tab: Tab,  # noqa: F811
    demo_store: Path,
    demo_runs: dict[str, str],
) -> None:
    sick, healthy = demo_runs["sick"], demo_runs["healthy"]
    with tracker.open_run(sick, store=demo_store) as r:
        stored = r.top_k("conv2")
    tab.goto(f"/runs/{sick}/topk?layer=conv2")
    grid = tab.page.locator(".topk-grid")
    grid.first.wait_for()
    rows = grid.first.locator(".topk-row")
    assert rows.count() == min(32, stored.values.shape[0])
    assert rows.first.locator("canvas.topk-patch").count() == stored.values.shape[1]
    # The first picture of channel 0 is the stored top input of channel 0.
    title = rows.first.locator("canvas").first.get_attribute("title") or ""
    assert title.startswith(f"input #{stored.indices[0, 0]}:")
    dead = int((stored.values[:32, 0] <= 0).sum())
    assert rows.locator("text=never positive").count() == dead
    # Beside the healthy run: two grids, and the choice is in the URL.
    tab.page.select_option("#topk-vs", healthy)
    tab.page.locator(".topk-grid").nth(1).wait_for()
    assert tab.page.locator(".topk-grid").count() == 2
    assert tab.query()["vs"] == [healthy] and tab.query()["layer"] == ["conv2"]
    tab.screenshot("topk-compare")
    if os.environ.get("TRACKER_DOCS_IMAGES"):  # regenerate docs/reading-the-panels.md's picture
        clip = {"x": 0, "y": 0, "width": 1600, "height": 1100}
        tab.page.screenshot(path=str(DOCS_IMAGES / "guide-topk.png"), clip=clip)
    tab.goto(f"/runs/{sick}/layers/conv2")  # reached from the layer explorer
    tab.page.locator("#layer-top-inputs").click()
    tab.page.locator(".topk-grid").first.wait_for()
    assert tab.query()["layer"] == ["conv2"]
    tab.assert_clean()


def test_a_layer_without_top_inputs_falls_back_and_says_so(
    tab: Tab,  # noqa: F811
    demo_runs: dict[str, str],
) -> None:
    tab.goto(f"/runs/{demo_runs['healthy']}/topk?layer=nope")
    tab.page.locator(".topk-grid").first.wait_for()
    # A layer without top inputs in the URL falls back to the first layer that has them, saying so.
    assert tab.page.locator("#topk-layer").input_value() == "conv1"
    assert "nope has no top inputs" in tab.page.locator("#topk-note").inner_text()
    tab.assert_clean()
