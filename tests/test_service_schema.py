"""schemathesis against the running app's own /openapi.json: no 5xx, every answer matches the schema.

Property-based: for each operation, requests generated from the schema (and some that break it) go over
real HTTP to the shared server; every response must be a documented status with a body of the documented
shape and content type, and schema-invalid requests must be refused with a 4xx.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

pytest_plugins = ["service_fixtures"]


@pytest.fixture(scope="session")
def api_schema(live_server):  # type: ignore[no-untyped-def]
    return schemathesis.openapi.from_url(f"{live_server.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same requests on every run: a failure here is reproducible
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_conforms_to_its_schema(case) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate()
