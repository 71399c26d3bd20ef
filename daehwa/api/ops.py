"""Operations endpoints: ``GET /metrics`` (Prometheus) and ``GET /api/usage`` (tokens and cost per user and model)."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from ..errors import AuthenticationError, NotFound, PermissionDenied
from ..pricing import parse_since, usage_report
from ..services import Services
from .auth import CurrentUser

router = APIRouter(tags=["operations"])


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text format; with DAEHWA_METRICS_TOKEN set, only for 'Authorization: Bearer <token>'."""
    services = _services(request)
    token = services.settings.metrics_token
    if token is not None:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            raise AuthenticationError(
                "GET /metrics needs 'Authorization: Bearer <DAEHWA_METRICS_TOKEN>'.", code="invalid_metrics_token"
            )
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/api/usage")
async def usage(
    request: Request,
    user: CurrentUser,
    of: Annotated[
        str | None,
        Query(
            alias="user",
            description="Whose usage (a user name); admins only, for someone else. Admins get everyone without it.",
        ),
    ] = None,
    since: Annotated[
        str | None, Query(description="From when: YYYY-MM-DD (UTC), an ISO date-time, 'today', or 7d / 24h.")
    ] = None,
) -> dict[str, Any]:
    """Tokens, turns and cost per user and model. A user sees their own; an admin anyone's."""
    services = _services(request)
    start = parse_since(since)
    user_id: str | None = user.id
    if of is not None and of != user.name:
        if not user.is_admin:
            raise PermissionDenied("Only an admin may see another user's usage: leave out ?user=.")
        record = await services.store.get_user_by_name(of)
        if record is None:
            raise NotFound(f"No user named {of!r}.", param="user")
        user_id = record.user.id
    elif of is None and user.is_admin:
        user_id = None
    totals = await services.store.usage_totals(user_id=user_id, since=start)
    return usage_report(totals, start)
