"""The HTML page shells, static files and Plotly route of web/ (no browser needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import web
from web import create_app

WEB = Path(web.__file__).parent
# Namespace names such as xmlns="http://www.w3.org/2000/svg" are identifiers, not requests.
EXTERNAL_URL = re.compile(r"https?://(?!www\.w3\.org/)")


def test_runs_page(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert 'id="runs"' in html
    assert 'id="filter"' in html
    assert "No runs yet" in html  # the empty state ships with the page, shown by runs.js
    assert "/assets/runs.js" in html


def test_run_page(client, demo_runs):
    run_id = demo_runs["sick"]
    html = client.get(f"/runs/{run_id}").get_data(as_text=True)
    assert f'data-run-id="{run_id}"' in html
    assert "<title>sick · tracker</title>" in html
    for element in ('id="metrics"', 'id="config"', 'id="layers"', 'id="health"'):
        assert element in html
    assert "/vendor/plotly.min.js" in html
    assert "/assets/run.js" in html


def test_layer_page(client, demo_runs):
    run_id = demo_runs["healthy"]
    response = client.get(f"/runs/{run_id}/layers/conv1?step=25")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'data-layer="conv1"' in html
    for quantity in ("activation", "activation_grad", "weight", "weight_grad"):
        assert f'id="panel-{quantity}"' in html
    assert html.count("How to read this") == 5  # four quantities and the histogram over time
    assert 'id="step"' in html
    assert 'id="sample"' in html
    assert 'id="param"' in html


def test_layer_page_quoted_name(client, demo_runs):
    """Layer names arrive URL-quoted; %63 is "c"."""
    response = client.get(f"/runs/{demo_runs['healthy']}/layers/%63onv1")
    assert response.status_code == 200
    assert 'data-layer="conv1"' in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "path",
    [
        "/runs/0123456789abcdef",  # well-formed id, no such run
        "/runs/not-a-run-id",
        "/runs/0123456789abcdef/layers/conv1",
    ],
)
def test_unknown_run_is_404_page(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "Not found" in response.get_data(as_text=True)


def test_compare_page(client, demo_runs):
    ids = f"{demo_runs['healthy']},{demo_runs['sick']}"
    response = client.get(f"/compare?runs={ids}")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert f'data-runs="{ids}"' in html
    assert "<title>Compare healthy vs sick · tracker</title>" in html
    for element in ('id="differ"', 'id="curves"', 'id="overlay"', 'id="diff"', 'id="snapshots"'):
        assert element in html
    assert "/assets/compare.js" in html
    assert html.count("How to read this") == 5  # every panel explains itself


def test_compare_page_of_one_run_compares_its_epochs(client, demo_runs):
    html = client.get(f"/compare?runs={demo_runs['sick']}&epochs=0,2").get_data(as_text=True)
    assert f'data-runs="{demo_runs["sick"]}"' in html
    assert 'id="epochs"' in html


@pytest.mark.parametrize(
    ("query", "message"),
    [("", "Pick runs to compare"), ("?runs=0123456789abcdef", "no run with id")],
)
def test_compare_page_without_known_runs_is_404(client, query, message):
    response = client.get(f"/compare{query}")
    assert response.status_code == 404
    assert message in response.get_data(as_text=True)


def test_run_page_has_diagnosis_and_flow(client, demo_runs):
    html = client.get(f"/runs/{demo_runs['sick']}").get_data(as_text=True)
    for element in ('id="diagnosis"', 'id="diagnosis-status"', 'id="flow"', 'id="flow-view"'):
        assert element in html
    assert "What tracker found wrong in this run" in html


def test_unknown_layer_is_404_page(client, demo_runs):
    response = client.get(f"/runs/{demo_runs['healthy']}/layers/no.such.layer")
    assert response.status_code == 404
    assert "no.such.layer" in response.get_data(as_text=True)


def test_api_errors_stay_json(client):
    response = client.get("/api/v1/runs/0123456789abcdef")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == 404


def test_plotly_is_served_locally(client):
    response = client.get("/vendor/plotly.min.js")
    assert response.status_code == 200
    assert response.mimetype == "text/javascript"
    assert b"plotly" in response.get_data()[:500].lower()
    response.close()


@pytest.mark.parametrize("name", sorted(p.name for p in (WEB / "static").iterdir()))
def test_static_files_are_served(client, name):
    response = client.get(f"/assets/{name}")
    assert response.status_code == 200
    response.close()


def test_pages_reference_existing_assets(client, demo_runs):
    run_id = demo_runs["healthy"]
    for path in ("/", f"/runs/{run_id}", f"/runs/{run_id}/layers/conv1", f"/compare?runs={run_id}"):
        html = client.get(path).get_data(as_text=True)
        for asset in re.findall(r'(?:src|href)="(/assets/[^"]+)"', html):
            response = client.get(asset)
            assert response.status_code == 200, asset
            response.close()


def _web_files() -> list[Path]:
    return sorted(p for p in WEB.rglob("*") if p.suffix in {".html", ".js", ".css", ".svg"})


@pytest.mark.parametrize("path", _web_files(), ids=lambda p: p.name)
def test_no_external_urls(path):
    text = path.read_text(encoding="utf-8")
    assert not EXTERNAL_URL.search(text), f"{path.name} refers to another server"


def test_pages_have_no_inline_script(client, demo_runs):
    """All JS lives in static files, so a Content-Security-Policy of script-src 'self' works."""
    run_id = demo_runs["healthy"]
    pages = ("/", f"/runs/{run_id}", f"/runs/{run_id}/layers/conv1", f"/compare?runs={run_id}")
    for path in (*pages, "/runs/0123456789abcdef"):
        html = client.get(path).get_data(as_text=True)
        scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, flags=re.DOTALL)
        for attrs, body in scripts:
            assert "src=" in attrs, path
            assert not body.strip(), f"inline script in {path}"
        assert not re.search(r"<[^>]+\son[a-z]+\s*=", html), f"inline event handler in {path}"


def test_empty_store_runs_page(store_path):
    app = create_app(str(store_path))
    try:
        response = app.test_client().get("/")
        assert response.status_code == 200
        assert "tracker demo" in response.get_data(as_text=True)
        assert app.test_client().get("/api/v1/runs").get_json()["runs"] == []
    finally:
        app.extensions["tracker.store"].close()


def test_pages_are_served_with_a_strict_content_security_policy(client) -> None:  # type: ignore[no-untyped-def]
    from web import CONTENT_SECURITY_POLICY

    response = client.get("/")
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert (
        "script-src 'self';" in CONTENT_SECURITY_POLICY
        and "unsafe-eval" not in CONTENT_SECURITY_POLICY
    )
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/api/v1/health").headers["X-Frame-Options"] == "DENY"
