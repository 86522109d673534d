"""STUDIO_TOKEN: who may use the studio once the operator's port is reachable from elsewhere.

The studio can put words in the avatar's mouth and take the stream off air, and its status
shows the HLS URL (which carries the stream key), so off loopback it needs a token (config.py
refuses to start without one there). With a token set, every route but the open ones
(/healthz and /metrics, for probes and Prometheus; with many stations also each station's
/stations/NAME/healthz and /stations/NAME/metrics) needs either

- `Authorization: Bearer <token>` (scripts, curl), or
- the cookie that logging in at /login sets (browsers: the page, its fetches and its event
  stream all send it). The cookie holds an HMAC of the token, not the token: it stops working
  when the token changes, and a copied cookie does not reveal the token. HttpOnly (the page's
  scripts cannot read it) and SameSite=Strict (no other site's page can make the browser send
  it, on top of the studio's own origin check).

A request without either gets a 401 with a one-line JSON reason; a browser asking for a page
(a GET of a path ending in "/": the studio, the station list, a station's studio) is sent to
the login form instead. The token never reaches a log line or a response.

/login?next=PATH (the pages send an operator whose cookie stopped working there) returns to
PATH after the login, so they land on the station they had open. Only a path on this origin is
followed (safe_next); anything else goes to "/", so the form is never an open redirect.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import re
from urllib.parse import parse_qs, quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from poc.ops.http import json_error

LOGIN_PATH = "/login"
COOKIE = "poc_studio"
COOKIE_MAX_AGE_S = 30 * 24 * 3600  # an operator's browser stays logged in for a month
_COOKIE_CONTEXT = b"poc studio login cookie v1"
_HOME = "/"


class StudioTokenGuard:
    """ASGI middleware: passes `open_paths` (exact), paths that `open_pattern` (a regular
    expression) matches in full, and the login form through; everything else needs the token
    (bearer header or login cookie). Compares in constant time."""

    def __init__(
        self, app: ASGIApp, token: str, open_paths: frozenset[str], open_pattern: str | None = None
    ) -> None:
        self.app = app
        self._token = token.encode("utf-8")
        self._cookie = hmac.new(self._token, _COOKIE_CONTEXT, hashlib.sha256).hexdigest()
        self.open_paths = open_paths
        self.open_pattern = re.compile(open_pattern) if open_pattern is not None else None

    def is_open(self, path: str) -> bool:
        """Whether `path` is served without the token."""
        if path in self.open_paths:
            return True
        return self.open_pattern is not None and self.open_pattern.fullmatch(path) is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        if scope["path"] == LOGIN_PATH:
            response = await self._login(request)
        elif self._allowed(request):
            await self.app(scope, receive, send)
            return
        elif request.method in ("GET", "HEAD") and scope["path"].endswith("/"):
            response = RedirectResponse(_login_for(scope["path"]), status_code=303)
        else:
            response = json_error(
                401,
                "the studio needs STUDIO_TOKEN: send 'Authorization: Bearer <token>' or log in at /login",
                {"WWW-Authenticate": 'Bearer realm="poc studio"'},
            )
        await response(scope, receive, send)

    def _allowed(self, request: Request) -> bool:
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self._is_token(credential.strip()):
            return True
        cookie = request.cookies.get(COOKIE, "")
        return hmac.compare_digest(cookie.encode("utf-8"), self._cookie.encode("ascii"))

    def _is_token(self, credential: str) -> bool:
        """Whether a bearer credential is the token. Starlette decodes header bytes as Latin-1,
        so `credential.encode("latin-1")` is the bytes as sent: a token beyond ASCII arrives as
        its UTF-8 from curl and most clients, as Latin-1 from a few (Python's http.client).
        Both comparisons always run, in constant time."""
        wire = credential.encode("latin-1")  # the header's bytes exactly: each char came from one
        meant_by_latin1_client = credential.encode("utf-8")
        from_utf8_client = hmac.compare_digest(wire, self._token)
        from_latin1_client = hmac.compare_digest(meant_by_latin1_client, self._token)
        return from_utf8_client or from_latin1_client

    async def _login(self, request: Request) -> Response:
        if request.method in ("GET", "HEAD"):
            return _login_page(safe_next(request.query_params.get("next")))
        if request.method != "POST":
            return json_error(405, "Method Not Allowed", {"Allow": "GET, HEAD, POST"})
        # A plain urlencoded form, parsed here: Starlette's form parser needs python-multipart.
        fields = parse_qs((await request.body()).decode("utf-8", "replace"))
        given = (fields.get("token") or [""])[0].strip()
        back = safe_next((fields.get("next") or [""])[0])
        if not hmac.compare_digest(given.encode("utf-8"), self._token):
            return _login_page(back, "That is not the studio token.", status=401)
        response = RedirectResponse(back, status_code=303)
        response.set_cookie(COOKIE, self._cookie, max_age=COOKIE_MAX_AGE_S, httponly=True, samesite="strict")
        return response


def safe_next(path: str | None) -> str:
    """Where to go after logging in: `path` when it is a path on this origin, else "/".

    A path starts with one "/"; "//host" is another site. Browsers also read "/\\host" as
    "//host" and drop tabs and newlines from URLs ("/<TAB>/host"), so a backslash, a space or
    anything outside printable ASCII refuses the path too (the pages send it percent-encoded)."""
    if not path or not path.startswith("/") or path.startswith("//"):
        return _HOME
    if "\\" in path or not all("!" <= char <= "~" for char in path):
        return _HOME
    return path


def _login_for(path: str) -> str:
    """The login form, returning to `path` (a bookmarked station's page) once logged in."""
    back = safe_next(quote(path, safe="/"))
    return LOGIN_PATH if back == _HOME else f"{LOGIN_PATH}?next={quote(back, safe='')}"


def _login_page(back: str = _HOME, error: str = "", status: int = 200) -> HTMLResponse:
    notice = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    # The path to return to rides along in the form (escaped: it came from the query string).
    carried = "" if back == _HOME else f'<input type="hidden" name="next" value="{html.escape(back)}">'
    page = _LOGIN_HTML.replace("{notice}", notice).replace("{next}", carried)  # the sent text last
    return HTMLResponse(page, status_code=status)


_LOGIN_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>poc studio: log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:16px system-ui,sans-serif;max-width:24rem;margin:4rem auto;padding:0 1rem}
input,button{font:inherit;padding:.4rem}input{width:100%;box-sizing:border-box}.error{color:#b00}</style>
</head><body><h1>poc studio</h1>
<form method="post" action="/login"><p><label for="token">Studio token (STUDIO_TOKEN)</label></p>
<p><input id="token" name="token" type="password" autocomplete="current-password" required autofocus></p>
{next}{notice}<p><button type="submit">Log in</button></p></form></body></html>
"""
