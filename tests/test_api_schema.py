"""Property tests of openapi.json: schemathesis generates requests for every route of the app over
the demo store; no answer is a 5xx and every one matches the schema (status codes, error shape).

Half the generated cases get a real run id and layer, so the handlers' reading code runs, not only
their 404s. Writes are sent without a token (schemathesis would otherwise write into the shared
demo store): they must answer 401, never 5xx. Schemathesis's pytest plugin does not run on this
pytest, so the test drives its strategies with Hypothesis directly.
"""

from __future__ import annotations

import os
import zlib

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks

API = "/api/v1"
# Not positive_data_acceptance: a schema cannot say every rule (end >= start, epochs= needs one
# run, names that exist), and the API answers those with a 400 on purpose.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]
EXAMPLES = int(
    os.environ.get("SCHEMA_EXAMPLES", "12")
)  # per operation and mode: about 35 routes, ~30 s in all


def _real(case, demo_runs: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """Swap in a real run id and layer for half the cases (chosen by a hash of the case)."""
    seed = zlib.crc32(repr((case.path_parameters, case.query)).encode())
    if seed % 2:
        return
    ids = [demo_runs["healthy"], demo_runs["sick"]]
    if case.path_parameters and "run_id" in case.path_parameters:
        case.path_parameters["run_id"] = ids[seed % 4 // 2]
    if case.path_parameters and "name" in case.path_parameters:
        case.path_parameters["name"] = "conv1"
    if case.query and "layer" in case.query:
        case.query["layer"] = "conv1"
    if case.query and "runs" in case.query:
        case.query["runs"] = ",".join(ids)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_5xx_and_answers_match_the_schema(app, demo_runs: dict[str, str], mode) -> None:  # type: ignore[no-untyped-def]
    schema = schemathesis.openapi.from_wsgi(f"{API}/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case) -> None:  # type: ignore[no-untyped-def]
            _real(case, demo_runs)
            response = case.call()
            assert response.status_code < 500, (case.as_curl_command(), response.text[:500])
            if case.method != "GET":
                assert response.status_code in (401, 404, 405, 413, 415), case.as_curl_command()
            case.validate_response(response, checks=CHECKS)

        try:
            check()
        except Unsatisfiable:  # no parameter to get wrong (GET /projects): nothing negative
            assert mode == GenerationMode.NEGATIVE, operation.label
