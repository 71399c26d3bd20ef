"""``DELETE /api/me``: a signed-in user deletes their own account (docs/api.md, "Deleting your account").

The request must name the account (``confirm``, the user name) and, when the account has a password, carry it, so
neither a stray click nor a browser left open deletes anything. Every turn of the user stops (in every server process,
through the stop-signal channel) before the store deletes the data, so what those turns were writing goes too; the
processes forget the user's cached sessions and keys at once. Usage records stay for accounting, detached from the
user (``Store.delete_user``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..accounts import SESSION_COOKIE
from ..errors import InvalidRequest, PermissionDenied
from .auth import CurrentPrincipal, accounts_of
from .schemas import ErrorOut

router = APIRouter(tags=["auth"])

_ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorOut} for status in (400, 401, 403, 409)}


class DeleteAccountIn(BaseModel):
    confirm: str = Field(max_length=64, description="Your user name, to confirm: the deletion cannot be undone.")
    password: str | None = Field(
        default=None, max_length=1024, description="Your password; required when the account has one."
    )


class AccountDeletedOut(BaseModel):
    deleted: bool = True
    conversations: int = Field(description="Conversations deleted, with their messages and context memory")
    form_records: int
    api_keys: int
    sessions: int = Field(description="Browser sessions and login links ended")
    usage_records_kept: int = Field(description="Usage records kept for accounting, no longer linked to you")


@router.delete("/api/me", response_model=AccountDeletedOut, responses=_ERRORS)
async def delete_account(body: DeleteAccountIn, principal: CurrentPrincipal, request: Request) -> JSONResponse:
    """Delete your account and everything kept for it: conversations, interests, form records, keys, sessions.

    Send ``{"confirm": "<your user name>", "password": "..."}`` (the password only if you have one). The last admin
    cannot delete itself (409 ``last_admin``). Your session cookie is cleared; your API keys stop working at once."""
    user = principal.user
    accounts = accounts_of(request)
    if body.confirm != user.name:
        raise InvalidRequest(
            f"To delete your account, send your user name as confirm ({user.name!r}): this cannot be undone.",
            param="confirm",
            code="confirmation_required",
        )
    if await accounts.has_password(user.id) and not (
        body.password and await accounts.verify_user_password(user.id, body.password)
    ):
        raise PermissionDenied(
            "The password is missing or wrong: send your current password as password.", code="invalid_credentials"
        )
    await accounts.check_deletable(user)
    turns = request.app.state.turns
    await turns.end_user(user.id)  # their turns store what they have before the data goes
    deletion = await accounts.delete_user(user.id)
    await turns.end_user(user.id, wait=False)  # and any process that cached them meanwhile forgets them again
    response = JSONResponse(
        AccountDeletedOut(
            conversations=deletion.conversations,
            form_records=deletion.form_records,
            api_keys=deletion.api_keys,
            sessions=deletion.sessions,
            usage_records_kept=deletion.usage_detached,
        ).model_dump()
    )
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return response
