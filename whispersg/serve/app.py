"""The FastAPI application: OpenAI-compatible audio endpoints, the realtime WebSocket, the page.

Routes (all under ``/v1`` need ``Authorization: Bearer KEY`` when an API key is set):

- ``POST /v1/audio/transcriptions`` and ``/v1/audio/translations``: OpenAI's multipart
  fields (``file``, ``model``, ``language``, ``prompt``, ``response_format``,
  ``timestamp_granularities[]``, ``temperature``) plus ``diarize``, ``num_speakers``,
  ``min_speakers``, ``max_speakers`` and ``formats`` (extra files in verbose_json);
- ``GET /v1/models``: the model served (``whisper-1`` and ``whispersg`` are accepted as its aliases);
- ``WS /v1/realtime``: live transcription (see ``whispersg.serve.realtime``); browsers,
  which cannot set headers on a WebSocket, pass the key as ``?api_key=``;
- ``GET /health``: status, queue and limits (no key needed, no data in it);
- ``GET /``: the browser page (static files shipped in the package).

Errors use OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from fastapi import APIRouter, Depends, FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from whispersg.errors import AudioError, DependencyError, OptionError, WhisperSGError
from whispersg.serve.jobs import JobQueue, QueueFull
from whispersg.serve.responses import FILE_FORMATS, RESPONSE_FORMATS, TEXT_MEDIA_TYPES, text_body, verbose_json

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
# OpenAI's model name, our own name (the original WhisperSG's clients send it) and none at all.
MODEL_ALIASES = ("whisper-1", "whispersg", "default", "")
MEGABYTE = 1024 * 1024


@dataclass
class ServeSettings:
    api_key: Optional[str] = None
    workers: int = 1  # transcriptions running at once (each uses the pipeline's threads)
    max_queue: int = 8  # transcriptions waiting beyond those; more are refused with 429
    max_upload_mb: float = 200.0
    max_live_sessions: int = 2
    upload_idle_seconds: float = 30.0  # an upload that sends nothing for this long is refused (408), its place freed
    live_idle_seconds: float = 60.0  # a live session that sends nothing for this long is ended (a tab left open)
    bind: Optional[tuple[str, int]] = None  # (host, port) served; without a key, requests must name it as Host

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MEGABYTE)


class ApiError(HTTPException):
    """An HTTP error with OpenAI's error type and code."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 code: Optional[str] = None, param: Optional[str] = None, headers: Optional[dict] = None) -> None:
        super().__init__(status_code=status, detail=message, headers=headers)
        self.kind, self.code, self.param = kind, code, param


def error_body(message: str, kind: str = "invalid_request_error", code: Optional[str] = None,
               param: Optional[str] = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def create_app(pipeline, settings: Optional[ServeSettings] = None) -> FastAPI:
    """The service around one loaded pipeline (shared by every request and session)."""
    settings = settings or ServeSettings()
    queue = JobQueue(settings.workers, settings.max_queue)
    live = _SessionCounter(settings.max_live_sessions)
    # No /docs or /redoc: their pages load scripts from a CDN, and this service must work offline.
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        queue.close()

    # The schema is served below, behind the key like /v1.
    app = FastAPI(title="WhisperSG", version=_version(), docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.pipeline, app.state.settings, app.state.queue = pipeline, settings, queue
    app.add_middleware(UploadLimit, max_bytes=settings.max_upload_bytes, idle_seconds=settings.upload_idle_seconds)
    if settings.api_key is None and settings.bind is not None:
        app.add_middleware(HostCheck, host=settings.bind[0], port=settings.bind[1])
    _map_pipeline_errors(app)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        kind = getattr(error, "kind", "invalid_request_error" if error.status_code < 500 else "server_error")
        body = error_body(str(error.detail), kind, getattr(error, "code", None), getattr(error, "param", None))
        return JSONResponse(body, status_code=error.status_code, headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(f"invalid request: {error.errors()}"), status_code=400)

    def require_key(request: Request) -> None:
        if not _key_matches(settings.api_key, request.headers.get("authorization")):
            raise ApiError(401, "missing or wrong API key: send the header 'Authorization: Bearer KEY'",
                           code="invalid_api_key")

    api = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])

    @api.get("/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(pipeline)]}

    @api.get("/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        _check_model(pipeline, model_id)
        return _model_card(pipeline)

    @api.post("/audio/transcriptions")
    async def transcriptions(request: Request) -> Response:
        return await _transcribe_request(request, pipeline, queue, task="transcribe")

    @api.post("/audio/translations")
    async def translations(request: Request) -> Response:
        return await _transcribe_request(request, pipeline, queue, task="translate")

    async def openapi() -> dict[str, Any]:
        return app.openapi()

    app.include_router(api)
    app.add_api_route("/openapi.json", openapi, methods=["GET"], include_in_schema=False,
                      dependencies=[Depends(require_key)])

    @app.websocket("/v1/realtime")
    async def realtime(websocket: WebSocket) -> None:
        from whispersg.serve.realtime import run_session

        given = websocket.headers.get("authorization") or (
            f"Bearer {websocket.query_params['api_key']}" if "api_key" in websocket.query_params else None)
        if not _key_matches(settings.api_key, given):
            await websocket.close(code=1008, reason="missing or wrong API key")
            return
        await websocket.accept()
        try:
            overrides, speakers, live_settings = _realtime_options(pipeline, dict(websocket.query_params))
        except WhisperSGError as error:
            await websocket.send_json({"type": "error", "message": str(error)})
            await websocket.close(code=1008)
            return
        if not live.enter():
            await websocket.send_json({"type": "error", "message": f"the server is busy: {settings.max_live_sessions} live "
                                       "sessions are running; try again later"})
            await websocket.close(code=1013)
            return
        try:
            await run_session(websocket, pipeline, overrides, speakers, live_settings, settings.live_idle_seconds)
        finally:
            live.leave()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": pipeline.model_name, "auth": settings.api_key is not None,
                "queue": queue.stats(), "live_sessions": live.active, "max_live_sessions": settings.max_live_sessions,
                "max_upload_bytes": settings.max_upload_bytes}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


async def _transcribe_request(request: Request, pipeline, queue: JobQueue, task: str) -> Response:
    try:
        admission = queue.admit()  # before the body is read: a full server costs no upload, and uploads are bounded
    except QueueFull:
        raise _busy() from None
    try:
        return await _admitted_request(request, pipeline, admission, task)
    finally:
        admission.release()


def _busy() -> ApiError:
    return ApiError(429, "the server is busy: the transcription queue is full; try again shortly",
                    kind="rate_limit_error", code="queue_full", headers={"Retry-After": "5"})


async def _admitted_request(request: Request, pipeline, admission, task: str) -> Response:
    form = await request.form(max_files=1, max_fields=64)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ApiError(400, "the request has no audio: send the recording as the multipart field 'file'", param="file")
    _check_model(pipeline, str(form.get("model") or ""))
    response_format = str(form.get("response_format") or "json")
    if response_format not in RESPONSE_FORMATS:
        raise ApiError(400, f"response_format must be one of {', '.join(RESPONSE_FORMATS)} (got {response_format!r})",
                       param="response_format")
    granularities = [str(value) for value in form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities")]
    unknown = set(granularities) - {"word", "segment"}
    if unknown:
        raise ApiError(400, f"timestamp_granularities[] takes word and segment (got {sorted(unknown)})",
                       param="timestamp_granularities[]")
    file_formats = [fmt.strip() for fmt in str(form.get("formats") or "").split(",") if fmt.strip()]
    if set(file_formats) - set(FILE_FORMATS):
        raise ApiError(400, f"formats takes a comma-separated list of {', '.join(FILE_FORMATS)}", param="formats")
    overrides = _request_options(form, task)
    pipeline.options_for(**overrides)  # bad options are refused before a job is queued
    filename = Path(upload.filename or "upload").name or "upload"

    abandoned = threading.Event()

    def job():
        return _transcribe_upload(pipeline, upload, filename, overrides, abandoned)

    try:
        transcript = await _unless_client_leaves(request, admission.run(job), abandoned)
    finally:
        await upload.close()
    if transcript is None:
        return Response(status_code=499)  # nobody is listening; the status is for the access log
    if response_format == "json":
        return JSONResponse({"text": transcript.text})
    if response_format == "verbose_json":
        return JSONResponse(verbose_json(transcript, task, granularities, file_formats))
    return PlainTextResponse(text_body(transcript, response_format), media_type=TEXT_MEDIA_TYPES[response_format])


class _Abandoned(Exception):
    """The client of a running job left; raised from the job's progress report to stop it."""


async def _unless_client_leaves(request: Request, work, abandoned: threading.Event):
    """Await ``work``; if the client disconnects first, cancel it and return None: a queued job gives its place
    back at once, a running one stops at its next progress report."""
    job = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({job, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if job.done():
        return job.result()
    abandoned.set()
    job.cancel()
    with contextlib.suppress(asyncio.CancelledError, _Abandoned):
        await job
    return None


async def _disconnected(request: Request) -> None:
    # The body is read: the next message the server gets for this request is the client's disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _transcribe_upload(pipeline, upload: UploadFile, filename: str, overrides: dict[str, Any],
                       abandoned: threading.Event):
    """Copy the upload to a private temporary file (PyAV streams long files from disk) and transcribe it."""
    with tempfile.TemporaryDirectory(prefix="whispersg-serve-") as folder:
        # No suffix from the client: FFmpeg picks some demuxers (an .m3u8 playlist) by the name alone.
        path = Path(folder) / "upload"
        upload.file.seek(0)
        with open(path, "wb") as stored:
            shutil.copyfileobj(upload.file, stored, 1 << 20)
        try:
            transcript = pipeline.transcribe(path, progress=lambda *_: _stop_if(abandoned), **overrides)
        except WhisperSGError as error:
            # Name the client's file, not our temporary copy.
            raise type(error)(str(error).replace(str(path), filename)) from error
    transcript.source = filename
    return transcript


def _request_options(form, task: str) -> dict[str, Any]:
    options: dict[str, Any] = {"task": task}
    if form.get("language"):
        options["language"] = str(form.get("language"))
    if form.get("prompt"):
        options["initial_prompt"] = str(form.get("prompt"))
    if form.get("temperature") not in (None, ""):
        options["temperature"] = _number(form, "temperature", float)
    if _flag(form.get("diarize")):
        options["diarize"] = True
        for name in ("num_speakers", "min_speakers", "max_speakers"):
            if form.get(name) not in (None, ""):
                options[name] = _number(form, name, int)
    return options


def _realtime_options(pipeline, query: dict[str, str]) -> tuple[dict[str, Any], Any, Any]:
    """Options of a realtime session from its query string: language, task, diarize, max_speakers and the
    live settings (whispersg_live's segmentation flags).  Returns (pipeline overrides, online speaker
    labeller or None, live settings)."""
    from whispersg.live.settings import LiveSettings

    # Every live setting, by its whispersg_live flag's name; an empty value keeps the default.
    live_settings = LiveSettings.from_text({name: query[name] for name in LiveSettings.field_names() if query.get(name)})
    overrides: dict[str, Any] = {}
    if query.get("language"):
        overrides["language"] = query["language"]
    if query.get("task"):
        overrides["task"] = query["task"]
    pipeline.options_for(**overrides)  # a bad language or task is refused before any audio is taken
    speakers = None
    if _flag(query.get("diarize")):
        from whispersg.live.speakers import OnlineSpeakers

        try:
            maximum = int(query["max_speakers"]) if query.get("max_speakers") else None
        except ValueError:  # isdigit() took "²", which int() refuses
            raise OptionError(f"max_speakers must be a whole number >= 1 (got {query['max_speakers']!r})") from None
        pipeline.options_for(max_speakers=maximum)  # the range check every entry point shares
        speakers = OnlineSpeakers(pipeline.speaker_embedder(), max_speakers=maximum)
    return overrides, speakers, live_settings


def _number(form, name: str, kind):
    try:
        return kind(str(form.get(name)))
    except ValueError:
        raise ApiError(400, f"{name} must be a number (got {form.get(name)!r})", param=name) from None


def _flag(value) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


def _check_model(pipeline, requested: str) -> None:
    if requested in MODEL_ALIASES or requested == pipeline.model_name or requested == str(pipeline.model.path):
        return
    raise ApiError(404, f"model {requested!r} is not served here; this server runs {pipeline.model_name!r} "
                   f"(also accepted as 'whisper-1' or 'whispersg')", code="model_not_found", param="model")


def _model_card(pipeline) -> dict[str, Any]:
    return {"id": pipeline.model_name, "object": "model", "created": 0, "owned_by": "whispersg"}


def _key_matches(expected: Optional[str], authorization: Optional[str]) -> bool:
    if expected is None:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    # The scheme is part of the header's contract: a bare key is refused (as by OpenAI's servers).
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())


def _version() -> str:
    from whispersg import __version__

    return __version__


class _SessionCounter:
    def __init__(self, limit: int) -> None:
        self.limit, self.active = limit, 0
        self._lock = threading.Lock()

    def enter(self) -> bool:
        with self._lock:
            if self.active >= self.limit:
                return False
            self.active += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.active -= 1


def _stop_if(abandoned: threading.Event) -> None:
    if abandoned.is_set():
        raise _Abandoned


class HostCheck:
    """Without a key, answer only requests addressed to this server (its bound host, or localhost, on its port):
    a page on another site that rebinds its own name to this machine sends its own name as Host."""

    LOCAL = ("localhost", "127.0.0.1", "::1")

    def __init__(self, app, host: str, port: int) -> None:
        self.app, self.host, self.port = app, host.strip("[]").lower(), port

    def allowed(self, header: str) -> bool:
        import ipaddress

        name, port = header.lower(), "80"  # no port in Host: the default one
        if name.startswith("["):
            name, _, rest = name[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else port
        elif ":" in name:
            name, port = name.rsplit(":", 1)
        if self.port and port != str(self.port):
            return False
        if name == self.host or name in self.LOCAL:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        # Bound to every interface: any address of this machine; a name could be rebound, an address cannot.
        return self.host in ("0.0.0.0", "::", "")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            if not self.allowed(host):
                message = (f"Host {host!r} is not this server; without an API key only requests to "
                           f"{self.host}:{self.port} or localhost are answered (start the server with an API key to "
                           "serve other names)")
                if scope["type"] == "websocket":
                    await receive()
                    return await send({"type": "websocket.close", "code": 1008, "reason": "wrong Host"})
                return await JSONResponse(error_body(message, code="wrong_host"), status_code=421)(scope, receive, send)
        await self.app(scope, receive, send)


class UploadLimit:
    """Refuse request bodies over ``max_bytes`` with 413, before reading them where the size is declared, and
    bodies that stall for ``idle_seconds`` with 408 (a stalled upload must not hold its place)."""

    def __init__(self, app, max_bytes: int, idle_seconds: float = 30.0) -> None:
        self.app, self.max_bytes, self.idle_seconds = app, max_bytes, idle_seconds

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = (f"the upload is larger than this server's limit of {self.max_bytes / MEGABYTE:g} MB; "
                   "send a shorter or compressed recording (or start the server with a larger --max_upload_mb)")
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse(error_body(message, code="file_too_large"), status_code=413,
                                    headers={"Connection": "close"})
            return await response(scope, receive, send)
        received, body_done = 0, False

        async def counted_receive():
            nonlocal received, body_done
            if body_done:  # after the body only the disconnect comes, whenever the client leaves
                return await receive()
            try:
                incoming = await asyncio.wait_for(receive(), self.idle_seconds)
            except asyncio.TimeoutError:
                raise ApiError(408, f"the upload stalled: nothing arrived for {self.idle_seconds:g} s; send it again",
                               code="upload_timeout", headers={"Connection": "close"}) from None
            if incoming["type"] == "http.request":
                body_done = not incoming.get("more_body", False)
                received += len(incoming.get("body", b""))
                if received > self.max_bytes:
                    raise ApiError(413, message, code="file_too_large")
            return incoming

        await self.app(scope, counted_receive, send)


def _map_pipeline_errors(app: FastAPI) -> None:
    """Pipeline errors as HTTP answers: bad audio or options → 400, a missing extra → 501, others → 500."""

    @app.exception_handler(WhisperSGError)
    async def pipeline_error(request: Request, error: WhisperSGError) -> JSONResponse:
        if isinstance(error, (AudioError, OptionError)):
            status, kind = 400, "invalid_request_error"
        elif isinstance(error, DependencyError):
            status, kind = 501, "server_error"
        else:
            status, kind = 500, "server_error"
        return JSONResponse(error_body(str(error), kind), status_code=status)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
        logger.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse(error_body(f"internal error ({type(error).__name__}); see the server log", "server_error"),
                            status_code=500)
