"""Who is calling: API keys (``Authorization: Bearer``), browser sessions (cookie + CSRF header), login routes.

A request authenticated by the session cookie must echo the session's CSRF token in ``X-CSRF-Token`` on every
state-changing method; a request with an API key needs none (a browser never attaches one on its own).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.requests import HTTPConnection

from ..accounts import CSRF_HEADER, SESSION_COOKIE, Accounts, Session
from ..config import Settings
from ..errors import AuthenticationError, NotFound, PermissionDenied
from ..types import User
from .schemas import ApiKeyOut, MeOut, UserOut, api_key_json, user_json

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_bearer = HTTPBearer(auto_error=False, description="An API key: daehwa keys create --user NAME")
_cookie = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="The browser session (POST /api/auth/login)")


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller and how they proved it."""

    user: User
    via: Literal["api_key", "session"]
    session: Session | None = None
    token: str | None = None  # the session cookie's token (to log out)


def accounts_of(conn: HTTPConnection) -> Accounts:
    return conn.app.state.accounts


def settings_of(conn: HTTPConnection) -> Settings:
    return conn.app.state.settings


_NO_CREDENTIALS = (
    "Log in, or send an API key as 'Authorization: Bearer <key>' (create one with 'daehwa keys create --user NAME')."
)


async def user_for_authorization(accounts: Accounts, header: str) -> User:
    """The owner of the API key in an ``Authorization: Bearer <key>`` header; raises 401 for a bad header or key."""
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise AuthenticationError("The Authorization header must be 'Bearer <api key>'.")
    return await accounts.user_for_api_key(credentials.strip())


MISSING_API_KEY = (
    "You didn't provide an API key: send it as 'Authorization: Bearer <key>' "
    "(create one with 'daehwa keys create --user NAME')."
)


async def resolve_principal(conn: HTTPConnection, *, allow_cookie: bool = True) -> Principal | None:
    """Credentials of a request or WebSocket handshake; None when it carries none. Raises 401 for bad ones."""
    accounts = accounts_of(conn)
    header = conn.headers.get("authorization")
    if header:
        return Principal(await user_for_authorization(accounts, header), "api_key")
    if not allow_cookie:
        return None
    token = conn.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    session = await accounts.session(token)
    if session is None:
        raise AuthenticationError("Your session has expired or ended: log in again.", code="session_expired")
    if session.user.anonymous and not settings_of(conn).allow_anonymous:
        raise AuthenticationError("Anonymous use is turned off here: log in.", code="not_authenticated")
    return Principal(session.user, "session", session, token)


def check_csrf(request: Request, principal: Principal) -> None:
    if principal.via != "session" or request.method in SAFE_METHODS:
        return
    assert principal.session is not None
    given = request.headers.get(CSRF_HEADER, "")
    if not given or not hmac.compare_digest(given.encode(), principal.session.csrf_token.encode()):
        raise PermissionDenied(
            f"Missing or wrong {CSRF_HEADER} header: send the csrf_token from /api/auth/login or /api/auth/me.",
            code="csrf_failed",
        )


async def current_principal(
    request: Request,
    _bearer_doc: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    _cookie_doc: Annotated[str | None, Depends(_cookie)],
) -> Principal:
    """The caller of an /api route (API key or session + CSRF); 401 if anonymous."""
    principal = await resolve_principal(request)
    if principal is None:
        raise AuthenticationError(_NO_CREDENTIALS, code="not_authenticated")
    check_csrf(request, principal)
    request.state.user_id = principal.user.id
    return principal


async def current_user(principal: Annotated[Principal, Depends(current_principal)]) -> User:
    return principal.user


async def api_key_user(
    request: Request, _bearer_doc: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> User:
    """The caller of a /v1 route: API keys only, like OpenAI's API."""
    principal = await resolve_principal(request, allow_cookie=False)
    if principal is None:
        raise AuthenticationError(MISSING_API_KEY, code="missing_api_key")
    return principal.user


async def admin_user(user: Annotated[User, Depends(current_user)]) -> User:
    if not user.is_admin:
        raise PermissionDenied("Only an admin may do this: run it as an admin user ('daehwa users create --admin').")
    return user


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
CurrentUser = Annotated[User, Depends(current_user)]
AdminUser = Annotated[User, Depends(admin_user)]


# -- routes ----------------------------------------------------------------------------------------------------
router = APIRouter(tags=["auth"])


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class PasswordIn(BaseModel):
    current_password: str | None = Field(default=None, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class KeyIn(BaseModel):
    name: str = Field(default="", max_length=100)


class NewKeyOut(BaseModel):
    key: ApiKeyOut
    secret: str = Field(description="The API key itself: shown this once, store it now.")


class KeysOut(BaseModel):
    data: list[ApiKeyOut]


def set_session_cookie(response: Response, session: Session, settings: Settings) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session.token,
        max_age=int(settings.session_days * 86400),
        httponly=True,
        samesite="lax",
        secure=settings.cookie_secure,
        path="/",
    )


def _me(session: Session) -> dict[str, Any]:
    return {"user": user_json(session.user), "csrf_token": session.csrf_token}


@router.post("/api/auth/login", response_model=MeOut)
async def login(body: LoginIn, request: Request, response: Response) -> dict[str, Any]:
    """Check a user name and password; set the session cookie; return the user and the CSRF token."""
    accounts = accounts_of(request)
    user = await accounts.check_password(body.username, body.password)
    session = await accounts.create_session(user)
    set_session_cookie(response, session, settings_of(request))
    return _me(session)


@router.post("/api/auth/anonymous", response_model=MeOut)
async def anonymous_login(request: Request, response: Response) -> dict[str, Any]:
    """A session for a new anonymous user, when DAEHWA_ALLOW_ANONYMOUS is on."""
    if not settings_of(request).allow_anonymous:
        raise PermissionDenied("Anonymous use is turned off: log in (an admin can set DAEHWA_ALLOW_ANONYMOUS=true).")
    accounts = accounts_of(request)
    session = await accounts.create_session(await accounts.create_anonymous_user())
    set_session_cookie(response, session, settings_of(request))
    return _me(session)


@router.post("/api/auth/logout", status_code=204)
async def logout(principal: CurrentPrincipal, request: Request) -> Response:
    """End the browser session and clear its cookie."""
    if principal.token:
        await accounts_of(request).end_session(principal.token)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return response


@router.get("/api/auth/me", response_model=MeOut)
async def me(principal: CurrentPrincipal) -> dict[str, Any]:
    """The logged-in user, and the CSRF token to send with state-changing requests (null for API keys)."""
    return {
        "user": user_json(principal.user),
        "csrf_token": principal.session.csrf_token if principal.session else None,
    }


@router.post("/api/auth/password", status_code=204)
async def change_password(body: PasswordIn, principal: CurrentPrincipal, request: Request) -> Response:
    """Set your password; the current one is required once a password is set.

    Your other browser sessions and unused login links end; the session making the change stays. API keys stay.
    """
    accounts = accounts_of(request)
    if await accounts.has_password(principal.user.id) and not (
        body.current_password and await accounts.verify_user_password(principal.user.id, body.current_password)
    ):
        raise PermissionDenied("The current password is wrong.", code="invalid_credentials")
    if principal.user.anonymous:
        raise PermissionDenied("Anonymous users have no password.")
    # principal.token is None for an API key: then every session ends.
    await accounts.set_password(principal.user.id, body.new_password, keep_session=principal.token)
    return Response(status_code=204)


@router.get("/auth/magic", include_in_schema=True)
async def magic_login(request: Request, token: Annotated[str, Query(min_length=1, max_length=200)]) -> Response:
    """Redeem a one-time login link: set the session cookie and go to the chat page."""
    session = await accounts_of(request).redeem_login_token(token)
    response = RedirectResponse("/", status_code=303)
    set_session_cookie(response, session, settings_of(request))
    return response


@router.get("/api/keys", response_model=KeysOut)
async def list_keys(user: CurrentUser, request: Request) -> dict[str, Any]:
    """Your API keys (never the keys themselves: only their first characters)."""
    return {"data": [api_key_json(k) for k in await accounts_of(request).list_api_keys(user.id)]}


@router.post("/api/keys", response_model=NewKeyOut, status_code=201)
async def create_key(body: KeyIn, user: CurrentUser, request: Request) -> dict[str, Any]:
    """Create an API key for yourself; its secret is in this response only."""
    if user.anonymous:
        raise PermissionDenied("Anonymous users cannot create API keys: log in.")
    new = await accounts_of(request).create_api_key(user.id, body.name)
    return {"key": api_key_json(new.record), "secret": new.secret}


@router.delete("/api/keys/{key_id}", status_code=204)
async def revoke_key(key_id: str, user: CurrentUser, request: Request) -> Response:
    """Revoke one of your API keys; it stops working at once."""
    if not await accounts_of(request).revoke_api_key(key_id, user_id=user.id):
        raise NotFound("No such API key.", param="key_id")
    return Response(status_code=204)


__all__ = [
    "AdminUser",
    "CurrentPrincipal",
    "CurrentUser",
    "Principal",
    "UserOut",
    "api_key_user",
    "resolve_principal",
    "router",
]
