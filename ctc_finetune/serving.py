# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""serve.py's HTTP server (FastAPI + uvicorn): one trained model behind OpenAI's audio transcription API.

POST /v1/audio/transcriptions takes OpenAI's multipart form and answers in its five formats (json, text, srt,
verbose_json, vtt) or as server-sent events (stream=true); GET /v1/models, /health and /metrics (Prometheus) sit
beside it. Every refusal is OpenAI's error object with its status, and the server keeps serving. A request's
upload is copied to a file of the server's own naming, read and decoded in a thread of its own, and its windows go
through the batcher (batcher.py), which runs them with other requests' windows; the file is deleted when the request
ends, and a client that goes away cancels its windows."""

import asyncio
import concurrent.futures
import dataclasses
import hmac
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from contextlib import asynccontextmanager
from typing import Callable, Optional

from fastapi import APIRouter, Depends, FastAPI, Request, WebSocket
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from .audio import AUDIO_EXTENSIONS, read_header
from .batcher import BadAudio, Batcher, Job, transcribe_file
from .engine import Engine, Transcript, check_lm_packages, plain_beam_search
from .faults import UserError
from .longform import keep_memory_flat
from .openai_api import ApiError, Asked, event, parse_form, render
from .realtime import realtime

logger = logging.getLogger(__name__)

TRANSCRIPTIONS = "/v1/audio/transcriptions"
PAGE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "page.html")  # GET /: upload or record
MIB = 2**20  # bytes
FORM_OVERHEAD_BYTES = 64 * 1024  # a form's fields and boundaries, allowed beyond the file's --max_upload_mb
DRAIN_FACTOR = 4  # the body of a refused request is read (and dropped) up to this many times the upload limit,
# so that the client, still sending, gets the answer instead of a reset connection
MAX_FORM_FIELDS = 100  # form fields a request may send
COPY_BLOCK_BYTES = MIB  # the upload is copied to its file a block at a time
RETRY_AFTER_SECONDS = 1  # a 503's Retry-After
CLIENT_GONE = 499  # nginx's status of a request whose client closed the connection (counted in /metrics only)
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)  # seconds
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)  # windows per forward pass


@dataclasses.dataclass
class ServeOptions:
    """How serve.py serves (its flags of the same names)."""

    served_model_name: str  # the `model` requests name (default: the model folder's name)
    language: Optional[str] = None  # the MMS adapter loaded, and the only `language` requests may ask for
    max_batch_seconds: float = 60.0  # padded audio per forward pass across requests; 0: every window alone
    max_wait_ms: float = 5.0  # the longest a window waits for others to join its batch
    max_upload_mb: float = 25.0  # MiB per uploaded file
    max_audio_seconds: float = 3600.0  # audio per request
    max_queue: int = 64  # requests in progress at once (reading, waiting for the model, decoding)
    api_key: Optional[str] = None  # the bearer token every endpoint but /health asks for

    def __post_init__(self):
        if self.max_batch_seconds < 0 or self.max_wait_ms < 0:
            raise UserError(f"--max_batch_seconds and --max_wait_ms must be >= 0 (0 turns batching across requests "
                            f"off); got {self.max_batch_seconds:g} and {self.max_wait_ms:g}.")
        if self.max_upload_mb <= 0 or self.max_audio_seconds <= 0 or self.max_queue < 1:
            raise UserError(f"--max_upload_mb and --max_audio_seconds must be > 0 and --max_queue >= 1; got "
                            f"{self.max_upload_mb:g}, {self.max_audio_seconds:g} and {self.max_queue}.")
        if self.api_key is not None and not self.api_key.strip():
            raise UserError("--api_key is empty; pass the key clients send as `Authorization: Bearer KEY`.")


class UploadTooLarge(Exception):
    """A body past its limit."""


def check_port(host: str, port: int) -> None:
    """A UserError, before the model loads, when `host:port` cannot be listened on."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as e:
        raise UserError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e}); pick another port "
                        "(or stop what listens on it).") from e


# The request: its body under a limit, its form's fields

class Body:
    """A request's body read through a byte limit (UploadTooLarge past it); drain() reads and drops what is left."""

    def __init__(self, receive, limit: int):
        self.receive, self.limit, self.read, self.finished = receive, limit, 0, False

    async def next(self) -> dict:
        message = await self.receive()
        if message["type"] == "http.request":
            self.read += len(message.get("body", b""))
            self.finished = not message.get("more_body", False)
        else:  # http.disconnect
            self.finished = True
        return message

    async def __call__(self) -> dict:
        message = await self.next()
        if self.read > self.limit:
            raise UploadTooLarge
        return message

    async def drain(self) -> None:
        while not self.finished and self.read <= DRAIN_FACTOR * self.limit:
            await self.next()


# Waiting on a request's work while watching its client

class ClientGone(Exception):
    """The client closed the connection before its answer."""


async def disconnected(receive) -> None:
    """Returns when the client goes away (the body has been read: only http.disconnect is left to come)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_gone(receive, awaitable, job: Job):
    """The awaitable's result, or ClientGone (with the job cancelled) if the client leaves first."""
    work, gone = asyncio.ensure_future(awaitable), asyncio.ensure_future(disconnected(receive))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if work.done():
        return work.result()
    job.cancel()
    work.cancel()
    raise ClientGone


async def next_event(deltas: asyncio.Queue, work: asyncio.Future) -> tuple[str, object]:
    """("delta", text) when a piece of text is ready, else ("done", Transcript) once the work is done (its ApiError
    raised)."""
    if deltas.empty() and not work.done():
        getter = asyncio.ensure_future(deltas.get())
        await asyncio.wait({getter, work}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            return "delta", getter.result()
        getter.cancel()
    if not deltas.empty():
        return "delta", deltas.get_nowait()
    return "done", work.result()


class Metrics:
    """Prometheus metrics of one server, in a registry of its own."""

    def __init__(self, queue_depth: Callable, in_progress: Callable):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)  # process_resident_memory_bytes, process_cpu_seconds_total, ...
        self.requests = Counter("serve_transcription_requests", "Transcription requests by HTTP status.",
                                ["status"], registry=registry)
        self.audio = Counter("serve_audio_seconds", "Seconds of audio transcribed.", registry=registry)
        self.latency = Histogram("serve_request_seconds", "Transcription requests' time to their last byte.",
                                 buckets=LATENCY_BUCKETS, registry=registry)
        self.batch_windows = Histogram("serve_batch_windows", "Windows per forward pass.", buckets=BATCH_BUCKETS,
                                       registry=registry)
        self.batch_audio = Histogram("serve_batch_audio_seconds", "Seconds of audio per forward pass.",
                                     buckets=LATENCY_BUCKETS, registry=registry)
        Gauge("serve_queue_windows", "Windows waiting for the model.", registry=registry).set_function(queue_depth)
        Gauge("serve_requests_in_progress", "Transcription requests in progress (what --max_queue bounds).",
              registry=registry).set_function(in_progress)

    def batch(self, windows: int, seconds: float) -> None:
        self.batch_windows.observe(windows)
        self.batch_audio.observe(seconds)


class RequestMetrics:
    """ASGI middleware: every transcription request's status and time to its last byte (refusals and streams
    included)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != TRANSCRIPTIONS:
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [CLIENT_GONE]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.requests.labels(str(status[0])).inc()
            self.metrics.latency.observe(time.perf_counter() - start)


# The server: the engine, the batcher, the requests in progress

class Admission:
    """A request's place among the --max_queue in progress; released once, when the request ends."""

    def __init__(self, server: "Server"):
        self.server, self.released = server, False
        server.in_progress += 1

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.server.in_progress -= 1


class Server:
    """One model served: the engine, its batcher (the thread that runs the model), a thread per request in progress
    (reading, decoding) and the folder that holds the uploads while they are transcribed."""

    def __init__(self, engine: Engine, options: ServeOptions):
        self.engine, self.options = engine, options
        batch_seconds = options.max_batch_seconds if engine.batch_seconds else 0.0  # group norm: windows alone
        self.metrics = Metrics(lambda: self.batcher.depth(), lambda: self.in_progress)
        self.batcher = Batcher(engine.forward, engine.sampling_rate, batch_seconds, options.max_wait_ms / 1000,
                               self.metrics.batch)
        self.in_progress, self.created = 0, int(time.time())
        self.upload_limit = int(options.max_upload_mb * MIB)
        self.pool = self.workdir = self.hotword_decoder = None
        self.lock = threading.Lock()

    def start(self) -> None:
        keep_memory_flat()
        self.workdir = tempfile.mkdtemp(prefix="ctc-serve-")
        self.pool = concurrent.futures.ThreadPoolExecutor(self.options.max_queue, thread_name_prefix="ctc-request")
        self.batcher.start()

    def stop(self) -> None:
        self.batcher.stop()
        self.pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def authorize(self, request: Request) -> None:
        """A 401 unless the request carries `Authorization: Bearer KEY` (when the server has --api_key)."""
        key = self.options.api_key
        if key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
            raise ApiError(401, "missing or wrong API key: send `Authorization: Bearer KEY` with the server's "
                                "--api_key.", code="invalid_api_key")

    def admit(self) -> Admission:
        if self.in_progress >= self.options.max_queue:
            raise ApiError(503, f"the server is busy ({self.in_progress} requests in progress, --max_queue "
                                f"{self.options.max_queue}); retry in a moment.", code="server_busy",
                           headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        return Admission(self)

    async def read_form(self, request: Request, body: Body):
        """The multipart form, its file under --max_upload_mb (a 413 past it, before it is all read where the
        request says its length)."""
        too_large = ApiError(413, f"the upload is larger than --max_upload_mb {self.options.max_upload_mb:g} MiB.",
                             "file", "file_too_large")
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > body.limit:
            raise too_large
        try:
            form = await Request(request.scope, body).form(max_files=1, max_fields=MAX_FORM_FIELDS)
        except UploadTooLarge:
            raise too_large from None
        except HTTPException as e:
            raise ApiError(400, f"the body is not a multipart form this server can read ({e.detail}).") from e
        upload = form.get("file")
        if getattr(upload, "size", None) is not None and upload.size > self.upload_limit:
            await form.close()
            raise too_large
        return form

    async def transcriptions(self, request: Request) -> Response:
        """POST /v1/audio/transcriptions."""
        body = Body(request.receive, self.upload_limit + FORM_OVERHEAD_BYTES)
        admission, job, handed_over = None, Job(), False
        try:
            self.authorize(request)
            admission = self.admit()
            form = await self.read_form(request, body)
            try:
                asked = parse_form(form, self.options.served_model_name, self.options.language)
            except ApiError:
                await form.close()
                raise
            if asked.stream:
                response = await self.stream(request, asked, job, admission)
                handed_over = True
                return response
            transcript = await unless_gone(request.receive, self.run_work(job, asked), job)
            return render(asked, transcript, self.language(asked))
        except ApiError as e:
            await body.drain()
            return e.response()
        except ClientGone:
            return Response(status_code=CLIENT_GONE)
        finally:
            if admission is not None and not handed_over:
                admission.release()

    def run_work(self, job: Job, asked: Asked, on_text: Optional[Callable] = None) -> asyncio.Future:
        future = asyncio.get_running_loop().run_in_executor(self.pool, self.work, job, asked, on_text)
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # a cancelled job's error is not news
        return future

    async def stream(self, request: Request, asked: Asked, job: Job, admission: Admission) -> Response:
        """stream=true: the text as transcript.text.delta events as windows settle it, then transcript.text.done.
        A refusal before the first event is a plain error; after it, an error event."""
        loop, deltas = asyncio.get_running_loop(), asyncio.Queue()
        work = self.run_work(job, asked, lambda text: loop.call_soon_threadsafe(deltas.put_nowait, text))
        # The place is given back when the work ends: a client that leaves before the first chunk is sent never
        # starts the events' generator, whose `finally` would give it back
        work.add_done_callback(lambda _: admission.release())
        first = await unless_gone(request.receive, next_event(deltas, work), job)

        async def events():
            kind, value = first
            try:
                while kind == "delta":
                    yield event({"type": "transcript.text.delta", "delta": value})
                    kind, value = await next_event(deltas, work)
                yield event({"type": "transcript.text.done", "text": value.text})
            except ApiError as e:
                yield event(e.body())
            finally:
                job.cancel()  # the client left mid-stream: its windows not run yet never run

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    def work(self, job: Job, asked: Asked, on_text: Optional[Callable]) -> Transcript:
        """A request's thread: the upload copied to a file of the server's naming, checked, transcribed through the
        batcher; the file deleted. Every failure leaves as an ApiError (or CancelledError when the client left)."""
        fd, path = tempfile.mkstemp(dir=self.workdir, suffix=".upload")
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(asked.upload.file, out, COPY_BLOCK_BYTES)
            asked.upload.file.close()
            self.check_audio(path)
            transcript = transcribe_file(self.engine, self.batcher, job, path, self.decoding(asked.hotwords),
                                         on_text)
        except BadAudio as e:
            raise ApiError(400, f"the uploaded file cannot be transcribed: {e}.", "file", "invalid_audio") from e
        except UserError as e:  # hotwords, where the beam search's packages are missing
            raise ApiError(400, str(e), "hotwords", "unsupported") from e
        except (ApiError, concurrent.futures.CancelledError):
            raise
        except Exception as e:  # a bug or a failed forward pass: this request fails, not the server
            logger.exception("error: a transcription request failed")
            raise ApiError(500, f"internal error ({type(e).__name__}); the server's log has the details.") from e
        finally:
            os.unlink(path)
        self.metrics.audio.inc(transcript.duration)
        return transcript

    def check_audio(self, path: str) -> None:
        """A 400 for an empty upload, a 413 for audio over --max_audio_seconds (from its header, nothing decoded)."""
        if os.path.getsize(path) == 0:
            raise ApiError(400, "the uploaded file is empty.", "file", "invalid_audio")
        frames, rate, _, reason = read_header(path)
        if reason:
            raise ApiError(400, f"the uploaded file cannot be transcribed: {reason} (send audio that soundfile "
                                f"decodes: {', '.join(e[1:] for e in AUDIO_EXTENSIONS)}).", "file", "invalid_audio")
        if frames / rate > self.options.max_audio_seconds:
            raise ApiError(413, f"the audio lasts {frames / rate:,.1f} s, more than --max_audio_seconds "
                                f"{self.options.max_audio_seconds:g}.", "file", "audio_too_long")

    def decoding(self, hotwords: list):
        """The engine's decoding, or with hotwords a beam search favouring them (the LM's, or one without an LM,
        built at the first request that asks)."""
        if not hotwords:
            return None
        if self.engine.decoding.decoder is None:
            with self.lock:
                if self.hotword_decoder is None:
                    check_lm_packages("hotwords", ("pyctcdecode", "pygtrie"))
                    self.hotword_decoder = plain_beam_search(self.engine.model, self.engine.tokenizer)
        return self.engine.decoding.with_hotwords(hotwords, self.hotword_decoder)

    def language(self, asked: Asked) -> str:
        """verbose_json's language: the adapter's, else the one the request named, else "unknown"."""
        return self.options.language or asked.language or "unknown"


# The routes

router = APIRouter()


def authorized(request: Request) -> None:
    request.app.state.server.authorize(request)


@router.get("/health")
async def health():
    return {"status": "ok"}


@router.get("/", response_class=HTMLResponse)
async def page():
    """The web page: upload a file or record, and see each word's time and confidence (it asks for the key)."""
    with open(PAGE_FILE, encoding="utf-8") as f:
        return f.read()


@router.websocket("/v1/realtime")
async def live(websocket: WebSocket):
    await realtime(websocket.app.state.server, websocket)


@router.get("/v1/models", dependencies=[Depends(authorized)])
async def models(request: Request):
    return {"object": "list", "data": [model_card(request.app.state.server)]}


@router.get("/v1/models/{model}", dependencies=[Depends(authorized)])
async def model(request: Request, model: str):
    server = request.app.state.server
    if model != server.options.served_model_name:
        raise ApiError(404, f"model {model!r} is not served here; this server serves "
                            f"{server.options.served_model_name!r}.", "model", "model_not_found")
    return model_card(server)


def model_card(server: Server) -> dict:
    return {"id": server.options.served_model_name, "object": "model", "created": server.created,
            "owned_by": "ctc-finetune"}


@router.get("/metrics", dependencies=[Depends(authorized)])
async def metrics(request: Request):
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(request.app.state.server.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.post(TRANSCRIPTIONS)
async def transcriptions(request: Request):
    return await request.app.state.server.transcriptions(request)


async def openai_error(request: Request, error: Exception) -> Response:
    """FastAPI's own refusals (an unknown path, a wrong method) as OpenAI's error object."""
    if isinstance(error, ApiError):
        return error.response()
    return ApiError(error.status_code, str(error.detail)).response()


def build_app(engine: Engine, options: ServeOptions) -> FastAPI:
    """The FastAPI app serving `engine`: the batcher starts with the app and stops with it."""
    server = Server(engine, options)

    @asynccontextmanager
    async def lifespan(app):
        server.start()
        try:
            yield
        finally:
            server.stop()

    app = FastAPI(title="ctc-finetune serve.py", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server
    app.include_router(router)
    app.add_exception_handler(ApiError, openai_error)
    app.add_exception_handler(HTTPException, openai_error)
    app.add_middleware(RequestMetrics, metrics=server.metrics)
    return app


def serve(engine: Engine, options: ServeOptions, host: str, port: int) -> None:
    """Serve until Ctrl-C or SIGTERM (uvicorn finishes the requests in progress first)."""
    import uvicorn

    uvicorn.run(build_app(engine, options), host=host, port=port, log_config=None)
