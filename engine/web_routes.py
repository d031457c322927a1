"""The browser pages on the game port: /play, /watch, the static files of web/ and their config.

Every file of `web/` is read into memory when the server starts (a few hundred KB), so answering a
request never touches the disk on the loop. Bad requests get a clear 4xx: a path that tries to
leave web/ (``..``, encoded or not, backslashes, NUL), characters outside a conservative set, an
undecodable escape → 400; a path or query string longer than the limits → 414; an unknown file → 404.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote

if TYPE_CHECKING:
    from engine.server import GameServer

log = logging.getLogger("arbiter.web")

# web/ sits beside engine/ in the source tree; ARBITER_WEB_DIR points elsewhere (e.g. an installed copy).
WEB_DIR: Final = Path(os.environ.get("ARBITER_WEB_DIR") or Path(__file__).resolve().parents[1] / "web")
MAX_PATH: Final = 512  # bytes of the path part of a request target
MAX_QUERY: Final = 1024  # bytes of its query string
MAX_FILE: Final = 4 << 20
MAX_TOTAL: Final = 32 << 20
CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".ts": "text/plain; charset=utf-8",  # the .d.ts typings, for reading
}
PAGES: Final = {"/play": "play.html", "/watch": "watch.html"}
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/-]*$")
# Pages may talk to any hub and game server the page is told about; nothing else loads from elsewhere.
_CSP: Final = (
    "default-src 'self'; connect-src 'self' ws: wss: http: https:; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; frame-ancestors 'none'"
)

Headers = list[tuple[str, str]]
Answer = tuple[int, str, bytes, Headers]


def load_files(root: Path) -> dict[str, bytes]:
    """Every servable file under `root`, by its path relative to it ("sdk/client.js")."""
    files: dict[str, bytes] = {}
    total = 0
    if not root.is_dir():
        log.warning("no web directory at %s: /play and /watch are off", root)
        return files
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.suffix not in CONTENT_TYPES or any(part.startswith(".") for part in p.parts):
            continue
        size = p.stat().st_size
        if size > MAX_FILE or total + size > MAX_TOTAL:
            log.warning("web file %s not served: over the size limits", p)
            continue
        files[p.relative_to(root).as_posix()] = p.read_bytes()
        total += size
    return files


def error(status: int, msg: str) -> Answer:
    return status, "text/plain; charset=utf-8", (msg + "\n").encode(), [("Cache-Control", "no-store")]


class BadRequestError(Exception):
    def __init__(self, status: int, msg: str) -> None:
        super().__init__(msg)
        self.answer = error(status, msg)


def check_target(target: str) -> tuple[str, str]:
    """(decoded path, raw query) of a request target, or BadRequestError with the 4xx it deserves."""
    path, _, query = target.partition("?")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH:
        raise BadRequestError(414, f"path longer than {MAX_PATH} bytes")
    if len(query.encode("utf-8", "surrogatepass")) > MAX_QUERY:
        raise BadRequestError(414, f"query string longer than {MAX_QUERY} bytes")
    try:
        decoded = unquote(path, errors="strict")
    except UnicodeDecodeError:
        raise BadRequestError(400, "bad percent-encoding in path") from None
    if not _SAFE_PATH.match(decoded):
        raise BadRequestError(400, "path has characters outside A-Z a-z 0-9 . _ - /")
    if any(seg in ("..", ".") or seg.startswith(".") for seg in decoded.split("/")[1:]):
        raise BadRequestError(400, "path segments may not be '.', '..' or start with '.'")
    return decoded, query


class WebRoutes:
    """Answers the web routes of one server; `config` is what /web/config.json says to the pages."""

    def __init__(self, config: Callable[[], Mapping[str, Any]], root: Path = WEB_DIR, prefix: str = "/web/") -> None:
        self.config = config
        self.prefix = prefix
        self.files = load_files(root)

    @classmethod
    def for_server(cls, server: GameServer) -> WebRoutes:
        cfg = server.cfg

        def config() -> dict[str, Any]:
            return {
                "game": cfg.game,
                "campaign": cfg.campaign,
                "hub": cfg.hub_url or None,
                "tokens": server.verifier is not None,
                "watch_public": cfg.watch_public,
                "ws": "/",
                "webrtc": server.rtc is not None,  # relay workers: the page moves to data channels
            }

        return cls(config)

    def answer(self, target: str) -> Answer:
        """The answer to a GET of `target` (path and query) that is no other route's."""
        try:
            path, _ = check_target(target)
        except BadRequestError as bad:
            return bad.answer
        page = PAGES.get(path.rstrip("/") or "/")
        if page is not None:
            return self.file(page, "no-cache")
        if path == self.prefix + "config.json":
            body = json.dumps(dict(self.config())).encode()
            return 200, CONTENT_TYPES[".json"], body, [("Cache-Control", "no-store")]
        if path.startswith(self.prefix):
            return self.file(path[len(self.prefix) :], "public, max-age=300")
        return error(404, "not found")

    def file(self, rel: str, cache: str) -> Answer:
        body = self.files.get(rel)
        if body is None:
            return error(404, f"no such file: {rel}"[:200])
        ctype = CONTENT_TYPES[Path(rel).suffix]
        headers: Headers = [("Cache-Control", cache), ("X-Content-Type-Options", "nosniff")]
        if rel.endswith(".html"):
            headers += [("Content-Security-Policy", _CSP), ("X-Frame-Options", "DENY")]
        return 200, ctype, body, headers
