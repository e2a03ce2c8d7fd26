"""/api/v1/openapi.json describes every route of the app, from the code."""

from __future__ import annotations

import re

import pytest

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


def test_query_parameters_are_described(client) -> None:  # type: ignore[no-untyped-def]
    spec = client.get(f"{API}/openapi.json").get_json()

    def query(path: str) -> dict[str, dict]:  # type: ignore[type-arg]
        op = spec["paths"][f"{API}{path}"]["get"]
        return {p["name"]: p for p in op["parameters"] if p["in"] == "query"}

    assert set(query("/runs/{run_id}/series")) == {
        *("layer", "quantity", "stat", "param", "call", "points", "probe", "start", "end")
    }
    runs = query("/runs")
    assert (
        runs["tag"]["schema"]["type"] == "array" and "final_loss" in runs["sort"]["schema"]["enum"]
    )
    assert runs["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 1000}
    assert query("/runs/{run_id}/tensor")["step"]["required"] is True
    assert query("/projects") == {}


def test_a_handler_cannot_read_what_it_does_not_declare() -> None:
    from flask import Flask

    from api.params import integer, query
    from api.store import arg, int_arg

    app = Flask(__name__)

    @app.get("/t")
    @query(integer("n", "a number", maximum=9))
    def view() -> str:
        return "ok"

    with app.test_request_context("/t?n=3&m=1"):
        assert int_arg("n", required=False) == 3
        with pytest.raises(RuntimeError, match="does not declare"):
            arg("m", required=False)
        with pytest.raises(RuntimeError, match="unlike its declaration"):
            int_arg("n", required=False, maximum=10)  # bounds differ from the declaration
        with pytest.raises(RuntimeError, match="required"):
            int_arg("n")
