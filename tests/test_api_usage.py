"""GET /api/v1/runs/<id>/usage: a run's disk usage, and the JSON errors for bad ids."""

from __future__ import annotations

from pathlib import Path

API = "/api/v1"


def test_usage_counts_the_run_files(client, demo_store: Path, demo_runs: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    run_id = demo_runs["healthy"]
    body = client.get(f"{API}/runs/{run_id}/usage").get_json()
    files = [p for p in (demo_store / "runs" / run_id).rglob("*") if p.is_file()]
    assert body["run_id"] == run_id and body["compacted"] is True
    assert body["on_disk"] == {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}
    assert body["live"] == body["on_disk"] and body["superseded"] == {"files": 0, "bytes": 0}
    assert set(body["by_kind"]) == {"stats", "snapshots", "topk"}  # the demo records top-k


def test_usage_of_an_unknown_or_malformed_run(client) -> None:  # type: ignore[no-untyped-def]
    missing = client.get(f"{API}/runs/ffffffffffffffff/usage")
    assert missing.status_code == 404 and missing.get_json()["error"]["type"] == "not_found"
    bad = client.get(f"{API}/runs/..%2F..%2Fetc/usage")
    assert bad.status_code in (400, 404) and set(bad.get_json()) == {"error"}
    malformed = client.get(f"{API}/runs/NOT-HEX/usage")
    assert (
        malformed.status_code == 400
        and "invalid run id" in malformed.get_json()["error"]["message"]
    )
