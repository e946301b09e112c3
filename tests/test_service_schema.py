"""schemathesis against the running app's own /openapi.json: no 5xx, every answer matches the schema.

Property-based: for each operation, requests generated from the schema (and some that break it) go over
real HTTP to a server of the session corpus that asks for its read key (TVR_READ_API_KEY); every response
must be a documented status with a body of the documented shape and content type, schema-invalid requests
must be refused with a 4xx, and a request without the key must get a 401.

Requests that fit the schema may still be refused with a 4xx when their meaning is wrong: a ``filter`` that
does not parse in the filter language, a collection the index does not hold, ``q`` and ``like`` together.
JSON Schema cannot say those rules, so schemathesis's "schema-valid data is accepted" check is left out;
every answer must still be documented and never a 5xx.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

pytest_plugins = ["service_fixtures"]


READ_KEY = "test-read-key-0123456789"


@pytest.fixture(scope="module")
def api_schema(service_corpus, api_key):  # type: ignore[no-untyped-def]
    from service_fixtures import ThreadedServer

    with ThreadedServer(service_corpus.settings(api_key=api_key, read_api_key=READ_KEY)).start() as server:
        yield schemathesis.openapi.from_url(f"{server.url}/openapi.json", headers={"X-API-Key": READ_KEY})


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same requests on every run: a failure here is reproducible
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_conforms_to_its_schema(case) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate(
        headers={"X-API-Key": READ_KEY}, excluded_checks=[schemathesis.checks.positive_data_acceptance]
    )
