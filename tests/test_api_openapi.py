"""/api/v1/openapi.json describes every route of the app, from the code."""

from __future__ import annotations

import re

API = "/api/v1"


def test_every_route_is_described(app, client) -> None:  # type: ignore[no-untyped-def]
    spec = client.get(f"{API}/openapi.json").get_json()
    assert spec["openapi"].startswith("3.1") and spec["info"]["version"]
    described = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    routes = {
        (re.sub(r"<(?:[a-z_]+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith(f"{API}/")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert len(routes) > 20 and described == routes
    for path, ops in spec["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for method, op in ops.items():
            assert op["summary"], f"{method} {path} has no docstring"
            assert {p["name"] for p in op["parameters"] if p["in"] == "path"} == names
            assert ("security" in op) == (method in ("post", "put", "patch", "delete"))
    upload = spec["paths"][f"{API}/runs/{{run_id}}/segments/{{segment_id}}"]["put"]
    assert "application/octet-stream" in upload["requestBody"]["content"]
