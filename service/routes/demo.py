"""``GET /demo/queries``: the example searches of ``tvr demo`` (only a demo server has this route)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from ..errors import ERROR_RESPONSES

router = APIRouter(tags=["demo"], responses={401: ERROR_RESPONSES[401]})


class DemoQueries(BaseModel):
    queries: list[str] = Field(
        description="Searches in the demo captions' words, each with a matching clip in the demo corpus; "
        "together they name every colour, shape and direction the captions use."
    )


@router.get("/demo/queries", response_model=DemoQueries)
def demo_queries(request: Request) -> DemoQueries:
    """The example searches the demo page offers (``tvr demo`` only: other servers answer 404)."""
    return DemoQueries(queries=request.app.state.demo_queries)
