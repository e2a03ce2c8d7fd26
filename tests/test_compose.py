"""docker-compose.yml, the Dockerfile and the README agree, checked without a Docker engine.

tests/data/compose-spec.json is the compose-spec JSON schema as the docker-compose 1.29.2 wheel
on PyPI ships it (compose/config/compose_spec.json, 2021); the spec's later top-level ``name`` is
added here as the current spec defines it (a string).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
VARIABLE = re.compile(r'"(TRACKER_[A-Z0-9_]+)"')


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text())
    schema["properties"]["name"] = {"type": "string"}
    return jsonschema.Draft201909Validator(schema)


def _errors(document: dict[str, Any]) -> list[str]:
    return [f"{list(e.path)}: {e.message}" for e in _validator().iter_errors(document)]


def test_compose_file_follows_the_compose_spec() -> None:
    assert _errors(_compose()) == []


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (("services", "api", "depends_on", "minio", "condition"), "service_ready"),
        (("services", "minio", "healthcheck", "interval"), {"seconds": 5}),
        (("services", "api", "portz"), ["5000:5000"]),
    ],
)
def test_the_schema_check_catches_mistakes(path: tuple[str, ...], bad: object) -> None:
    document = _compose()
    node = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = bad
    assert _errors(document)


def test_services_start_in_order_and_report_health() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "minio", "createbucket", "api"}
    for name in ("postgres", "minio", "api"):
        assert services[name]["healthcheck"]["test"]
    assert services["createbucket"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert services["api"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "minio": {"condition": "service_healthy"},
        "createbucket": {"condition": "service_completed_successfully"},
    }
    volumes = set(_compose()["volumes"])
    for service in services.values():
        for mount in service.get("volumes", []):
            assert mount.split(":")[0] in volumes  # named volumes only: data outlives containers


def test_api_points_at_the_postgres_service_with_its_credentials() -> None:
    services = _compose()["services"]
    env = services["api"]["environment"]
    url = make_url(env["TRACKER_DATABASE_URL"])
    pg = services["postgres"]["environment"]
    assert url.get_backend_name() == "postgresql" and url.host == "postgres"
    assert url.port == 5432 and "5432:5432" in services["postgres"]["ports"]
    assert (url.username, url.password, url.database) == (
        pg["POSTGRES_USER"],
        pg["POSTGRES_PASSWORD"],
        pg["POSTGRES_DB"],
    )


def test_api_points_at_the_bucket_the_one_shot_creates() -> None:
    services = _compose()["services"]
    env = services["api"]["environment"]
    minio = services["minio"]["environment"]
    assert env["TRACKER_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert any(p.startswith("9000:9000") for p in services["minio"]["ports"])
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
        minio["MINIO_ROOT_USER"],
        minio["MINIO_ROOT_PASSWORD"],
    )
    bucket = env["TRACKER_STORE"].removeprefix("s3://").split("/")[0]
    script = services["createbucket"]["entrypoint"][-1]
    assert f"http://minio:9000 {minio['MINIO_ROOT_USER']} {minio['MINIO_ROOT_PASSWORD']}" in script
    assert script.endswith(f"mc mb --ignore-existing tracker/{bucket}")
    cache = env["TRACKER_CACHE_DIR"]
    assert any(v.endswith(":" + cache) for v in services["api"]["volumes"])


def test_api_serves_on_the_port_it_publishes_and_probes() -> None:
    api = _compose()["services"]["api"]
    command = api["command"]
    assert command[:2] == ["tracker", "server"]
    host, port = command[command.index("--host") + 1], command[command.index("--port") + 1]
    assert host == "0.0.0.0" and f"{port}:{port}" in api["ports"]
    assert f"http://127.0.0.1:{port}/api/v1/health" in " ".join(api["healthcheck"]["test"])


def _variables_read() -> set[str]:
    found: set[str] = set()
    for package in ("tracker", "api", "web"):
        for path in (ROOT / package).rglob("*.py"):
            found.update(VARIABLE.findall(path.read_text()))
    return found


def _readme_table() -> dict[str, str]:
    """{variable: default} from the table in README.md's "Run it for a team"."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Run it for a team", 1)[1].split("\n## ", 1)[0]
    table = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`TRACKER_"):
            table[cells[0].strip("`")] = cells[1]
    return table


def test_every_variable_the_app_reads_is_set_by_compose_or_documented_with_a_default() -> None:
    read = _variables_read()
    assert {"TRACKER_STORE", "TRACKER_DATABASE_URL", "TRACKER_S3_ENDPOINT_URL"} <= read
    documented = _readme_table()
    assert set(documented) == read, "README's table and the code disagree"
    env = _compose()["services"]["api"]["environment"]
    for name in read - set(env):
        assert documented[name], f"{name} is not set by compose and has no documented default"
    assert set(env) - read <= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}


def test_dockerfile_pins_cpu_torch_first_and_runs_tracker_server() -> None:
    docker = (ROOT / "Dockerfile").read_text()
    assert docker.index("torch==2.13.0") < docker.index("'.[postgres,server,s3]'")
    assert "--index-url https://download.pytorch.org/whl/cpu" in docker
    cmd = json.loads(docker.split("\nCMD ", 1)[1].splitlines()[0])
    assert cmd[:2] == ["tracker", "server"] and "--preload" not in cmd
    for folder in ("tracker", "api", "web", "migrations"):
        assert f"COPY {folder} " in docker
