"""docker-compose.yml and the Dockerfile are consistent, checked without a Docker engine."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_depend_on_a_healthy_database() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "api"}
    for service in services.values():
        assert service["healthcheck"]["test"]
    assert services["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "5000:5000" in services["api"]["ports"]


def test_api_points_at_the_postgres_service_with_its_credentials() -> None:
    services = _compose()["services"]
    env = services["api"]["environment"]
    url = make_url(env["TRACKER_DATABASE_URL"])
    pg = services["postgres"]["environment"]
    assert url.get_backend_name() == "postgresql" and url.host == "postgres"
    assert (url.username, url.password, url.database) == (
        pg["POSTGRES_USER"],
        pg["POSTGRES_PASSWORD"],
        pg["POSTGRES_DB"],
    )
    store = env["TRACKER_STORE"]
    assert any(v.endswith(":" + store) for v in services["api"]["volumes"])


def test_every_variable_the_app_reads_is_known_to_compose_or_has_a_default() -> None:
    read = set(re.findall(r'"(TRACKER_[A-Z_]+)"', (ROOT / "tracker/config.py").read_text()))
    assert read >= {"TRACKER_STORE", "TRACKER_DATABASE_URL"}
    env = _compose()["services"]["api"]["environment"]
    assert {"TRACKER_STORE", "TRACKER_DATABASE_URL"} <= set(env)


def test_dockerfile_pins_cpu_torch_first_and_serves_the_app_factory() -> None:
    docker = (ROOT / "Dockerfile").read_text()
    assert docker.index("torch==2.13.0") < docker.index("'.[postgres,server]'")
    assert "web:create_app()" in docker and "--preload" not in docker.split("CMD")[1]
    for folder in ("tracker", "api", "web", "migrations"):
        assert f"COPY {folder} " in docker
