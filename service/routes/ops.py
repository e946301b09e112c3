"""Liveness and readiness (open to every client), and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ..deps import ResourcesDep
from ..errors import ERROR_RESPONSES
from ..schemas import Health, Readiness

health = APIRouter(tags=["operations"])  # open to every client: load balancers and orchestrators probe them
router = APIRouter(tags=["operations"], responses={401: ERROR_RESPONSES[401]})


@health.get("/healthz", response_model=Health)
def healthz() -> Health:
    """Liveness: the process answers."""
    return Health()


@health.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready: `stage` says what is loading or missing."}},
)
def readyz(resources: ResourcesDep) -> JSONResponse:
    """Readiness: encoder, catalog and index loaded, and the index built with this encoder's checkpoint."""
    state = Readiness(**resources.readiness())
    return JSONResponse(state.model_dump(), status_code=200 if state.ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"description": "Prometheus text format.", "content": {CONTENT_TYPE_LATEST: {}}}},
)
def prometheus_metrics(resources: ResourcesDep) -> Response:
    """Prometheus metrics: request latency, encode/search/catalog time per stage, index size."""
    return Response(resources.metrics.render(), media_type=CONTENT_TYPE_LATEST)
