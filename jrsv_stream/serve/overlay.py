"""The OBS browser-source page, served by the caption server over plain HTTP.

``GET /overlay`` (or ``/overlay.html``): ``clients/overlay.html`` with the shared readability
rules (:mod:`jrsv_stream.export.readability`) filled in; its URL parameters pass through to
the page (``/overlay?stream=live&tracks=speech``). ``GET /overlay/rules.json``: the rules
alone, for a copy of the page opened as a file. No token: the page holds no secret, the
subscription it opens checks the subscriber token.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Response

from jrsv_stream.export.readability import rules_json
from jrsv_stream.serve.protocol import split_request_target

OVERLAY_PATHS = ("/overlay", "/overlay.html", "/overlay/")
RULES_PATH = "/overlay/rules.json"
RULES_MARK = "/*JRSV_RULES*/null"
OVERLAY_FILE = Path(__file__).resolve().parents[2] / "clients" / "overlay.html"


@lru_cache(maxsize=1)
def overlay_page() -> str:
    """The page with the rules filled in (read once)."""
    html = _overlay_source()
    if RULES_MARK not in html:
        raise RuntimeError(f"{OVERLAY_FILE} lacks the rules placeholder {RULES_MARK!r}")
    return html.replace(RULES_MARK, rules_json())


def _overlay_source() -> str:
    if OVERLAY_FILE.is_file():  # a source checkout or an editable install
        return OVERLAY_FILE.read_text(encoding="utf-8")
    from importlib.resources import files  # an installed wheel: package data of clients/

    return files("clients").joinpath("overlay.html").read_text(encoding="utf-8")


def _respond(connection: ServerConnection, body: str, content_type: str) -> Response:
    r = connection.respond(200, body)
    del r.headers["Content-Type"]
    r.headers["Content-Type"] = content_type
    r.headers["Cache-Control"] = "no-cache"
    r.headers["Access-Control-Allow-Origin"] = "*"
    return r


def overlay_response(connection: ServerConnection, path: str) -> Response | None:
    """The HTTP response for an overlay path, None for any other path."""
    p = split_request_target(path)[0]
    if p == RULES_PATH:
        return _respond(connection, rules_json() + "\n", "application/json")
    if p in OVERLAY_PATHS:
        return _respond(connection, overlay_page(), "text/html; charset=utf-8")
    return None
