"""Conversation intelligence's routes (docs/intelligence.md): the user's remembered interests (with the switch that
turns them off) and their feedback on recommendations. Anonymous users have no profile: reads are empty, writes
are 403."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from ..errors import NotFound, PermissionDenied
from ..intelligence.service import Intelligence
from .auth import CurrentUser
from .schemas import ErrorOut

router = APIRouter(tags=["intelligence"])

_ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorOut} for status in (400, 401, 403, 404, 503)}


class InterestOut(BaseModel):
    term: str
    weight: float = Field(description="Decayed count: each mention adds 1, halving every 30 days")


class InterestsOut(BaseModel):
    data: list[InterestOut] = Field(description="What is remembered, strongest first (kept while turned off)")
    enabled: bool = Field(
        description="Whether interests are learned and used: false when you turned them off, and for anonymous users"
    )
    anonymous: bool = Field(default=False, description="Anonymous users have no profile")


class InterestsSwitchIn(BaseModel):
    enabled: bool = Field(description="false: learn nothing more and use nothing remembered; true: again")


class DeletedOut(BaseModel):
    deleted: int


class FeedbackIn(BaseModel):
    catalogue: str = Field(min_length=1, max_length=200)
    item_id: str = Field(min_length=1, max_length=200)
    action: Literal["click", "dismiss"] = Field(description='"click" or "dismiss" (not interested)')


def _intel(request: Request) -> Intelligence:
    intel: Intelligence | None = request.app.state.services.intelligence
    if intel is None:
        raise NotFound(
            "Conversation intelligence is off: set DAEHWA_INTELLIGENCE=true (and install daehwa[intelligence])."
        )
    return intel


@router.get("/api/me/interests", response_model=InterestsOut, responses=_ERRORS)
async def list_interests(request: Request, user: CurrentUser) -> dict[str, Any]:
    """What the service remembers you are interested in, strongest first."""
    if user.anonymous:
        return {"data": [], "enabled": False, "anonymous": True}
    intel = _intel(request)
    return {"data": await intel.interests(user.id), "enabled": await intel.remembers(user), "anonymous": False}


@router.put("/api/me/interests", response_model=InterestsOut, responses=_ERRORS)
async def switch_interests(body: InterestsSwitchIn, request: Request, user: CurrentUser) -> dict[str, Any]:
    """Turn remembered interests off (nothing more is learned, nothing remembered goes into replies or picks) or on.
    What was learned stays, to see and delete, until you delete it."""
    if user.anonymous:
        raise PermissionDenied("Anonymous users have no profile: log in to keep interests.")
    intel = _intel(request)
    await intel.store.set_interests_enabled(user.id, body.enabled)
    return {"data": await intel.interests(user.id), "enabled": body.enabled, "anonymous": False}


@router.delete("/api/me/interests", response_model=DeletedOut, responses=_ERRORS)
async def delete_interests(request: Request, user: CurrentUser) -> dict[str, Any]:
    """Forget all your interests."""
    return {"deleted": 0 if user.anonymous else await _intel(request).store.delete_interests(user.id)}


@router.delete("/api/me/interests/{term}", response_model=DeletedOut, responses=_ERRORS)
async def delete_interest(term: str, request: Request, user: CurrentUser) -> dict[str, Any]:
    """Forget one interest."""
    return {"deleted": 0 if user.anonymous else await _intel(request).store.delete_interests(user.id, term)}


@router.post("/api/recommendations/feedback", status_code=204, responses=_ERRORS)
async def recommendation_feedback(body: FeedbackIn, request: Request, user: CurrentUser) -> Response:
    """Record a click on a recommended item or "not interested" (it is not offered to you again)."""
    if user.anonymous:
        raise PermissionDenied("Anonymous users have no profile: log in to save feedback.")
    await _intel(request).feedback(user.id, body.catalogue, body.item_id, body.action)
    return Response(status_code=204)
