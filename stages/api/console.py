"""The browser console's files and its sign-in, served by the API service.

The console is plain ES modules and CSS shipped inside the package
(``stages/api/console/``): no Node build at install time, nothing fetched from
elsewhere. Its files are public (they hold no data); every piece of data it
shows comes from the API's own routes, with the same token as any client.

A browser cannot put a bearer token on an ``<img>`` or on an EventSource, so
signing in trades the token for a cookie: ``POST /api/session`` with the token
sets ``framechain_session``, an HMAC of the token (HttpOnly, SameSite=Strict,
so no other site's page can send it; it ends when the token changes).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field

from stages.api.models import Problem, problem

if TYPE_CHECKING:
    from stages.api.app import ApiSettings

CONSOLE_DIR = Path(__file__).parent / "console"
ASSETS = "/console/"
COOKIE = "framechain_session"
SESSION_DAYS = 30
WRONG_TOKEN_DELAY_S = 1.0
_SESSION_SALT = b"framechain console session 1"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
SECURITY_HEADERS = {
    # everything from this service only: no inline script, no other origin,
    # never framed (a framed console could be clicked through by another page)
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; media-src 'self'; "
        "style-src 'self'; script-src 'self'; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


def session_value(token: str) -> bytes:
    """The cookie's value for this token: a browser never holds the token itself."""
    return hmac.new(token.encode(), _SESSION_SALT, hashlib.sha256).hexdigest().encode()


def is_console_path(path: str) -> bool:
    """Answered without the token: the console's own files, which hold no data."""
    return path == "/" or path.startswith(ASSETS)


class SignIn(BaseModel):
    token: str = Field(max_length=4096, description="The API's token (http.token).")


class Session(BaseModel):
    signed_in: bool
    token_needed: bool = Field(description="Whether this service asks for a token.")


def _session(signed_in: bool, token_needed: bool) -> Response:
    body = Session(signed_in=signed_in, token_needed=token_needed)
    return Response(
        body.model_dump_json(),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def add_console_routes(
    app: FastAPI, settings: ApiSettings, errors: dict[int | str, dict[str, Any]]
) -> None:
    token = settings.token

    def page(path: Path) -> Response:
        return FileResponse(
            path, media_type=_TYPES[path.suffix], headers=SECURITY_HEADERS
        )

    @app.get("/", response_class=FileResponse, include_in_schema=False)
    def console() -> Response:
        return page(CONSOLE_DIR / "index.html")

    @app.get(ASSETS + "{name:path}", include_in_schema=False)
    def console_file(name: str) -> Response:
        path = (CONSOLE_DIR / name).resolve()
        if (
            not path.is_relative_to(CONSOLE_DIR.resolve())
            or path.suffix not in _TYPES
            or not path.is_file()
        ):
            return problem(404, f"the console has no file {name!r}")
        return page(path)

    @app.get("/api/session", response_model=Session)
    def session(request: Request) -> Response:
        """Whether this browser is signed in (answered without the token)."""
        signed_in = token is None or hmac.compare_digest(
            request.cookies.get(COOKIE, "").encode(), session_value(token)
        )
        return _session(signed_in, token is not None)

    @app.post(
        "/api/session",
        response_model=Session,
        responses={400: {"model": Problem}, 422: errors[422]},
    )
    async def sign_in(body: SignIn, request: Request) -> Response:
        """Trade the token for the console's session cookie (HttpOnly,
        SameSite=Strict), which then stands for the token on every request.
        A wrong token answers signed_in false (a second later: guessing is slow),
        not 401, so the sign-in page's own request is never an error."""
        if token is None:
            return _session(True, False)
        if not hmac.compare_digest(body.token.encode(), token.encode()):
            settings.stats.unauthorized += 1
            await asyncio.sleep(WRONG_TOKEN_DELAY_S)
            return _session(False, True)
        answer = _session(True, True)
        answer.set_cookie(
            COOKIE,
            session_value(token).decode(),
            max_age=SESSION_DAYS * 86400,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https"
            or request.headers.get("x-forwarded-proto") == "https",
        )
        return answer

    @app.delete("/api/session", status_code=204, response_class=Response)
    def sign_out() -> Response:
        """Forget this browser's session cookie."""
        answer = Response(status_code=204)
        answer.delete_cookie(COOKIE, httponly=True, samesite="strict")
        return answer
