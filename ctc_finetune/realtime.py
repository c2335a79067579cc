# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""serve.py's live transcription over a WebSocket (/v1/realtime), in the shape of OpenAI's realtime transcription
events: the client sends 16-bit PCM as it records; the server answers with partial text as audio arrives and a final
transcript, with word times, when an utterance ends in a pause (or the client commits). The cutting into utterances
is streaming.py's; the windows run through the server's batcher, beside the HTTP requests' windows.

Client to server (JSON text messages; a binary message is PCM too):
    {"type": "transcription_session.update", "session": {"input_audio_format": "pcm16",
                                                         "input_audio_sample_rate": 16000}}   (default 24000)
    {"type": "input_audio_buffer.append", "audio": "<base64 of 16-bit little-endian mono PCM>"}
    {"type": "input_audio_buffer.commit"}     the utterance ends here, pause or not
Server to client:
    transcription_session.created / .updated             {"session": {...}}
    input_audio_buffer.speech_started                    {"item_id", "audio_start_ms"}
    conversation.item.input_audio_transcription.partial  {"item_id", "transcript"}: may still change (ours)
    input_audio_buffer.committed                         {"item_id"}
    conversation.item.input_audio_transcription.completed {"item_id", "transcript", "words", "start", "end"}: final
    error                                                {"error": {"type", "code", "message"}}: the session goes on
"""

import asyncio
import base64
import binascii
import hmac
import json
import logging
from typing import Optional

import numpy as np

from .streaming import StreamSession

logger = logging.getLogger(__name__)

OPENAI_SAMPLE_RATE = 24_000  # OpenAI's realtime PCM: 24 kHz unless the session says otherwise
INSECURE_KEY_PROTOCOL = "openai-insecure-api-key."  # a browser's way to send the key (no headers on WebSockets)
TRY_AGAIN_LATER = 1013  # WebSocket close code: the server is busy
POLICY_VIOLATION = 1008  # WebSocket close code: no key, or too much audio


class StreamError(Exception):
    """A message the session cannot take: answered with an error event, and the session goes on."""

    def __init__(self, message: str, code: str = "invalid_request"):
        super().__init__(message)
        self.code = code


class StreamOver(Exception):
    """The stream passed --max_audio_seconds: the session is closed."""


class Resampler:
    """16-bit PCM bytes at the client's rate to float32 samples at the model's, continuous across pieces."""

    def __init__(self, source_rate: int, rate: int):
        import soxr

        self.stream = soxr.ResampleStream(source_rate, rate, 1, dtype="float32") if source_rate != rate else None
        self.odd = b""  # a byte left over from a piece of odd length

    def __call__(self, pcm: bytes, last: bool = False) -> np.ndarray:
        pcm, self.odd = self.odd + pcm, b""
        if len(pcm) % 2:
            pcm, self.odd = pcm[:-1], pcm[-1:]
        samples = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
        return self.stream.resample_chunk(samples, last=last) if self.stream is not None else samples


class Realtime:
    """One WebSocket session: its stream through the engine and the server's batcher, events back."""

    def __init__(self, server, websocket):
        self.server, self.websocket = server, websocket
        self.job, self.rate = server.batcher.job(), OPENAI_SAMPLE_RATE
        self.session = StreamSession(server.engine, forward=self.forward)
        self.resample = Resampler(self.rate, server.engine.sampling_rate)
        self.received = 0  # samples at the model's rate

    def forward(self, pieces) -> list:
        futures = [self.server.batcher.submit(self.job, p.window, p.audio, p.start, first=True) for p in pieces]
        return [future.result() for future in futures]

    def description(self) -> dict:
        return {"model": self.server.options.served_model_name, "input_audio_format": "pcm16",
                "input_audio_sample_rate": self.rate}

    async def send(self, kind: str, **fields) -> None:
        await self.websocket.send_text(json.dumps({"type": kind, **fields}))

    async def run(self) -> None:
        from starlette.websockets import WebSocketDisconnect

        await self.send("transcription_session.created", session=self.description())
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                try:
                    await self.take(message)
                except StreamError as e:
                    await self.send("error", error={"type": "invalid_request_error", "code": e.code,
                                                    "message": str(e)})
        except StreamOver:
            await self.websocket.close(POLICY_VIOLATION)
        except WebSocketDisconnect:
            pass
        finally:
            self.job.cancel()

    async def take(self, message: dict) -> None:
        if message.get("bytes") is not None:
            return await self.audio(message["bytes"])
        try:
            event = json.loads(message.get("text") or "")
            kind = event["type"]
        except (ValueError, TypeError, KeyError):
            raise StreamError("each text message is a JSON object with a \"type\" (see docs/serve.md).")
        if kind == "input_audio_buffer.append":
            try:
                pcm = base64.b64decode(event.get("audio", ""), validate=True)
            except (binascii.Error, ValueError):
                raise StreamError("input_audio_buffer.append: \"audio\" is not base64 (16-bit PCM, base64).")
            await self.audio(pcm)
        elif kind == "input_audio_buffer.commit":
            await self.events(await asyncio.to_thread(self.commit), committed=True)
        elif kind in ("transcription_session.update", "session.update"):
            await self.update(event.get("session") or {})
        else:
            raise StreamError(f"unknown event type {kind!r}; expected input_audio_buffer.append, "
                              "input_audio_buffer.commit or transcription_session.update.", "unknown_event")

    async def update(self, session: dict) -> None:
        form = session.get("input_audio_format", "pcm16")
        rate = session.get("input_audio_sample_rate", self.rate)
        if form != "pcm16" or not isinstance(rate, int) or not 8000 <= rate <= 192_000:
            raise StreamError("the session takes input_audio_format \"pcm16\" and an input_audio_sample_rate from "
                              f"8000 to 192000; got {form!r} and {rate!r}.", "invalid_session")
        if self.received and rate != self.rate:
            raise StreamError("input_audio_sample_rate can change only before the first audio.", "invalid_session")
        self.rate, self.resample = rate, Resampler(rate, self.server.engine.sampling_rate)
        await self.send("transcription_session.updated", session=self.description())

    async def audio(self, pcm: bytes) -> None:
        samples = self.resample(pcm)
        self.received += len(samples)
        limit = self.server.options.max_audio_seconds
        if self.received > limit * self.server.engine.sampling_rate:
            await self.send("error", error={"type": "invalid_request_error", "code": "audio_too_long",
                                            "message": f"the stream passed --max_audio_seconds ({limit:g} s); "
                                                       "open a new session."})
            raise StreamOver
        await self.events(await asyncio.to_thread(self.session.feed, samples))

    def commit(self) -> list[dict]:
        events = self.session.feed(self.resample(b"", last=True)) + self.session.finish()
        self.resample = Resampler(self.rate, self.server.engine.sampling_rate)  # the next utterance's
        return events

    async def events(self, events: list[dict], committed: bool = False) -> None:
        for e in events:
            item = f"item_{e.get('item', self.session.items + 1)}"
            if e["type"] == "speech_started":
                await self.send("input_audio_buffer.speech_started", item_id=item,
                                audio_start_ms=round(e["start"] * 1000))
            elif e["type"] == "partial":
                await self.send("conversation.item.input_audio_transcription.partial", item_id=item,
                                transcript=e["text"])
            else:
                await self.send("input_audio_buffer.committed", item_id=item)
                await self.send("conversation.item.input_audio_transcription.completed", item_id=item,
                                transcript=e["text"], words=e["words"], start=e["start"], end=e["end"])
        if committed and not any(e["type"] == "final" for e in events):
            await self.send("input_audio_buffer.committed", item_id=None)


def offered_key(websocket) -> Optional[str]:
    """The API key a WebSocket client sent: `Authorization: Bearer KEY`, or the subprotocol
    `openai-insecure-api-key.KEY` (a browser's only way)."""
    scheme, _, given = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return given.strip()
    for protocol in websocket.headers.get("sec-websocket-protocol", "").split(","):
        if protocol.strip().startswith(INSECURE_KEY_PROTOCOL):
            return protocol.strip()[len(INSECURE_KEY_PROTOCOL):]
    return None


async def realtime(server, websocket) -> None:
    """A WebSocket session; without the key, or with the server full, an error event and the socket closed."""
    key, offered = server.options.api_key, offered_key(websocket)
    protocols = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    await websocket.accept(subprotocol=protocols[0] if protocols else None)
    if key is not None and (offered is None or not hmac.compare_digest(offered.encode(), key.encode())):
        return await refuse(websocket, POLICY_VIOLATION, "invalid_api_key", "missing or wrong API key: send "
                            "`Authorization: Bearer KEY` (or the subprotocol openai-insecure-api-key.KEY).")
    if server.in_progress >= server.options.max_queue:
        return await refuse(websocket, TRY_AGAIN_LATER, "server_busy", "the server is busy (--max_queue); retry in "
                            "a moment.")
    admission = server.admit()
    try:
        await Realtime(server, websocket).run()
    finally:
        admission.release()


async def refuse(websocket, close_code: int, code: str, message: str) -> None:
    await websocket.send_text(json.dumps({"type": "error", "error": {"type": "invalid_request_error", "code": code,
                                                                     "message": message}}))
    await websocket.close(close_code, message[:120])
