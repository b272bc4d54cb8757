"""Property-based fuzzing of every operation of /openapi.json (schemathesis): never a 5xx, and
every error is the JSON `{"error", "message"}` body.

Each generated request is sent three ways: with a valid key of the kind the operation expects
(so validation and handlers are reached, not just auth), with the other kind of key, and with
the Authorization header schemathesis generated (usually garbage).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from .harness import Harness

pytestmark = pytest.mark.unit


# Built at import: schemathesis parametrizes at collection time (its lazy fixture loader does
# not work with this pytest version). Fakes only, no I/O, no thread until a test runs.
HARNESS = Harness(start_client=False)
schema = schemathesis.openapi.from_asgi("/openapi.json", HARNESS.app)


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    yield HARNESS
    HARNESS.close()


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_server_errors_and_json_errors(case: schemathesis.Case, harness: Harness) -> None:
    security = case.operation.definition.raw.get("security") or []
    data_route = any("DataKey" in s for s in security)
    right, wrong = (
        (harness.alice.data, harness.alice.control)
        if data_route
        else (harness.alice.control, harness.alice.data)
    )
    for headers in (right, wrong, None):
        response = case.call(headers=headers)
        assert response.status_code < 500, (case.method, case.path, response.text)
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error", "message"}, body
            assert "Traceback" not in response.text
