"""The web layer of ``clcae app``: a small HTTP server (Python's standard library) over a :class:`PhotoEditor`.

Routes (JSON answers carry ``{"error": message}`` on failure, with the status below):

=======================================  ===========================================================================
``GET /``                                the page (``static/index.html``)
``GET /api/config``                      models, examples, sliders' range, the upload limit
``POST /api/photo?model=M``              body: the photo's bytes -> a new session, inverted (413 too large, 415 not
                                         an image, 422 no face)
``POST /api/example?name=N&model=M``     the same with a bundled example photo
``POST /api/invert``                     ``{"session", "model"}``: the session's photo with another model
``POST /api/edit``                       ``{"session", "strengths": {direction: value}}`` -> edited images
``GET /files/SESSION/PATH``              a file the session wrote (nothing else is served)
``GET /download/SESSION/image|latents``  the photo as edited now (PNG) / the codes (``latents.pt``), as attachments
=======================================  ===========================================================================

Bound to 127.0.0.1 unless told otherwise; there, requests whose ``Host`` is not a loopback name are refused (a web
page elsewhere cannot reach the app through DNS rebinding). Request bodies over the limit are refused from their
``Content-Length``: nothing of them is stored (they are read into nothing so the client sees the answer, or the
connection is cut when they are huge); the page also checks the size before sending. Each request runs in its own
thread; the editor serialises the computations.
"""
from __future__ import annotations

import json
import mimetypes
import re
import sys
import threading
import traceback
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ..photo import NoFaceError
from .editor import USER_ERRORS, PhotoEditor, SessionError, UploadError, UploadTooLarge

__all__ = ["STATIC", "EXAMPLES", "AppServer", "make_server", "serve_in_thread", "LOOPBACK_NAMES"]

STATIC = Path(__file__).resolve().parent / "static"
#: Example photos offered on the page (``NAME.jpg`` / ``.png``).
EXAMPLES = Path(__file__).resolve().parent / "examples"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
#: Largest JSON body accepted (the edit and invert requests are a few hundred bytes).
MAX_JSON_BYTES = 64 * 1024
#: An upload over the limit but below this is read and discarded before the answer (see ``_Handler._body``).
DRAIN_BYTES = 256 * 2 ** 20
#: Slider range (strengths in units of W's norm along a direction, as scripts/edit.py).
STRENGTH_RANGE = 3.0
_SESSION = re.compile(r"[A-Za-z0-9_-]{22}")


def _examples() -> dict[str, Path]:
    if not EXAMPLES.is_dir():
        return {}
    return {p.stem: p for p in sorted(EXAMPLES.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".png")}


class _HTTPError(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


class AppServer(ThreadingHTTPServer):
    """The HTTP server of the app: an editor, the page, and whether the ``Host`` header is checked."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], editor: PhotoEditor, *, verbose: bool = False):
        super().__init__(address, _Handler)
        self.editor = editor
        self.verbose = verbose
        self.check_host = address[0] in LOOPBACK_NAMES
        self.page = (STATIC / "index.html").read_bytes()
        self.examples = _examples()

    @property
    def url(self) -> str:
        """``http://HOST:PORT/`` as a browser on this machine reaches it."""
        host, port = self.server_address[:2]
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


class _Handler(BaseHTTPRequestHandler):
    server: AppServer
    protocol_version = "HTTP/1.1"
    server_version = "clcae-app"

    # ------------------------------------------------------------------------------------------- plumbing
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        if self.server.verbose:
            super().log_message(format, *args)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, headers: dict[str, str] | None = None
              ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, payload: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._json({"error": message}, status)

    def _body(self, limit: int) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            raise _HTTPError(HTTPStatus.LENGTH_REQUIRED, "the request needs a Content-Length")
        n = int(length)
        if n > limit:
            # Read the body into nothing (never stored), so the client gets the answer rather than a connection
            # reset halfway through its upload; a body beyond DRAIN_BYTES is not worth it: cut the connection.
            if n <= DRAIN_BYTES:
                while n > 0:
                    chunk = self.rfile.read(min(n, 2 ** 20))
                    if not chunk:
                        break
                    n -= len(chunk)
            else:
                self.close_connection = True
            raise UploadTooLarge(int(length), limit)
        return self.rfile.read(n)

    def _json_body(self) -> dict[str, Any]:
        try:
            data = json.loads(self._body(MAX_JSON_BYTES) or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise _HTTPError(HTTPStatus.BAD_REQUEST, "the request body is not JSON") from None
        if not isinstance(data, dict):
            raise _HTTPError(HTTPStatus.BAD_REQUEST, "the request body must be a JSON object")
        return data

    def _session(self, sid: Any):
        if not isinstance(sid, str) or not _SESSION.fullmatch(sid):
            raise SessionError("this photo's session has expired or never existed: open the photo again")
        return self.server.editor.session(sid)

    def _dispatch(self, method: str) -> None:
        if self.server.check_host:
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()
            if host not in LOOPBACK_NAMES:
                self._error(HTTPStatus.FORBIDDEN, "this app only answers requests addressed to this machine")
                return
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        try:
            if method == "GET":
                self._get(url.path, query)
            else:
                self._post(url.path, query)
        except _HTTPError as e:
            self._error(e.status, str(e))
        except UploadTooLarge as e:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(e))
        except UploadError as e:
            self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, str(e))
        except NoFaceError as e:
            reason = str(e).split(": ", 1)[-1]  # 'no face found' or 'no face found (best candidate ...)'
            detail = reason[len("no face found"):] if reason.startswith("no face found") else f" ({reason})"
            self._error(HTTPStatus.UNPROCESSABLE_ENTITY,
                        f"No face found in this photo{detail}. Try a photo with a larger, frontal face.")
        except SessionError as e:
            self._error(HTTPStatus.NOT_FOUND if "no such file" in str(e) else HTTPStatus.BAD_REQUEST, str(e))
        except USER_ERRORS as e:
            self._error(HTTPStatus.BAD_REQUEST, str(e))
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:  # noqa: BLE001 - one failed request must not stop the app
            traceback.print_exc(file=sys.stderr)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error (see the terminal running clcae app)")

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    # ------------------------------------------------------------------------------------------- routes
    def _get(self, path: str, query: dict[str, str]) -> None:
        editor = self.server.editor
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")
        elif path == "/api/config":
            self._json({"models": list(editor.models), "examples": list(self.server.examples),
                        "directions": editor.direction_names(), "strength_range": STRENGTH_RANGE,
                        "max_upload_bytes": editor.max_upload_bytes})
        elif path.startswith("/files/"):
            sid, _, rel = path[len("/files/"):].partition("/")
            file = editor.file(self._session(sid), urllib.parse.unquote(rel))
            kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
            self._send(HTTPStatus.OK, file.read_bytes(), kind)
        elif path.startswith("/download/"):
            sid, _, what = path[len("/download/"):].partition("/")
            session = self._session(sid)
            if what == "image":
                file, name, kind = editor.download_image(session), "clcae_edited.png", "image/png"
            elif what == "latents":
                if session.result is None:
                    raise SessionError("open a photo first")
                file, name, kind = session.result.faces[0].latents, "latents.pt", "application/octet-stream"
            else:
                raise _HTTPError(HTTPStatus.NOT_FOUND, "no such download")
            self._send(HTTPStatus.OK, file.read_bytes(), kind,
                       {"Content-Disposition": f'attachment; filename="{name}"'})
        else:
            raise _HTTPError(HTTPStatus.NOT_FOUND, "not found")

    def _post(self, path: str, query: dict[str, str]) -> None:
        editor = self.server.editor
        if path in ("/api/photo", "/api/example"):
            if path == "/api/photo":
                data = self._body(editor.max_upload_bytes)
            else:
                example = self.server.examples.get(query.get("name", ""))
                if example is None:
                    raise _HTTPError(HTTPStatus.NOT_FOUND, f"no example {query.get('name')!r}")
                if self.headers.get("Content-Length", "0").strip() != "0":
                    raise _HTTPError(HTTPStatus.BAD_REQUEST, "an example request has no body")
                data = example.read_bytes()
            session = editor.new_session()  # each photo its own session; one that cannot open is closed at once
            try:
                state = editor.open_photo(session, data, query.get("model"))
            except BaseException:
                editor.discard(session)
                raise
            self._json(state)
        elif path == "/api/invert":
            body = self._json_body()
            self._json(editor.invert(self._session(body.get("session")), body.get("model")))
        elif path == "/api/edit":
            body = self._json_body()
            strengths = body.get("strengths")
            if not isinstance(strengths, dict) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in strengths.values()):
                raise _HTTPError(HTTPStatus.BAD_REQUEST, 'strengths must be {"direction": number, ...}')
            if any(abs(float(v)) > STRENGTH_RANGE for v in strengths.values()):
                raise _HTTPError(HTTPStatus.BAD_REQUEST, f"strengths must be within ±{STRENGTH_RANGE:g}")
            self._json(editor.edit(self._session(body.get("session")), strengths))
        else:
            raise _HTTPError(HTTPStatus.NOT_FOUND, "not found")


def make_server(editor: PhotoEditor, host: str = "127.0.0.1", port: int = 7860, *, verbose: bool = False
                ) -> AppServer:
    """Bind the app to ``host:port`` (port 0: a free one); call ``serve_forever()`` (or run it in a thread)."""
    return AppServer((host, port), editor, verbose=verbose)


def serve_in_thread(server: AppServer) -> threading.Thread:
    """Serve in a daemon thread (tests, notebooks); stop with ``server.shutdown()``."""
    thread = threading.Thread(target=server.serve_forever, name="clcae-app", daemon=True)
    thread.start()
    return thread

