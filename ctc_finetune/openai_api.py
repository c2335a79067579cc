# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""OpenAI's audio transcription API as serve.py speaks it (serving.py): the form's fields and their checks, the five
response formats, the events of a stream, and the error object every refusal is.

Whisper's decoding hints (`prompt`, `temperature`) are accepted and not used: a CTC model has nothing they steer.
`hotwords` (or the SDK's `keywords[]`) are words a beam search favours. verbose_json's words carry a `confidence`
beside their times; its segments are the stretches of words between pauses that the subtitles' cues are, with
Whisper's decoding statistics set to neutral values (segments_of)."""

import dataclasses
import json
import math
from typing import Optional

from fastapi.responses import JSONResponse, PlainTextResponse, Response

from .engine import Transcript
from .subtitles import cue_words, subtitle_text

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")  # OpenAI's, but diarized_json
STREAM_FORMATS = ("json", "text")  # the formats whose text stream=true sends as events
GRANULARITIES = ("word", "segment")
MIN_CONFIDENCE = 1e-6  # a word's confidence floor in a segment's avg_logprob (the log of 0 is -inf)


class ApiError(Exception):
    """A refusal, answered as OpenAI's error object {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: Optional[str] = None, code: Optional[str] = None,
                 headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers

    def body(self) -> dict:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), self.status, headers=self.headers)


@dataclasses.dataclass
class Asked:
    """What a transcription request asks for."""

    upload: object  # the form's UploadFile
    response_format: str
    words: bool  # verbose_json's words (timestamp_granularities[] word)
    segments: bool  # verbose_json's segments (segment, or no granularity at all)
    stream: bool
    language: Optional[str]
    hotwords: list


def text_field(form, name: str) -> Optional[str]:
    value = form.get(name)
    if value is not None and not isinstance(value, str):
        raise ApiError(400, f"{name} is a file; send it as a plain form field.", name, "invalid_value")
    return value


def list_field(form, name: str) -> list[str]:
    """A repeated field, sent with brackets (OpenAI's SDK) or without (LiteLLM)."""
    values = form.getlist(f"{name}[]") + form.getlist(name)
    if not all(isinstance(v, str) for v in values):
        raise ApiError(400, f"{name} is a file; send it as plain form fields.", name, "invalid_value")
    return [v.strip() for v in values if v.strip()]


def parse_stream(value: Optional[str]) -> bool:
    if value is None or value.lower() in ("false", "0", ""):
        return False
    if value.lower() in ("true", "1"):
        return True
    raise ApiError(400, f"stream is true or false; got {value!r}.", "stream", "invalid_value")


def parse_form(form, served_model_name: str, served_language: Optional[str]) -> Asked:
    """The form's fields checked against what the server serves (the model's name, an MMS model's one language); a
    400 names the field and what to send."""
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise ApiError(400, "file is missing: send the audio as a multipart/form-data file field named file.",
                       "file", "missing_file")
    model = text_field(form, "model")
    if model and model != served_model_name:
        raise ApiError(400, f"model {model!r} is not served here; this server serves {served_model_name!r}.",
                       "model", "model_not_found")
    fmt = text_field(form, "response_format") or "json"
    if fmt not in RESPONSE_FORMATS:
        raise ApiError(400, f"response_format {fmt!r} is not one of {', '.join(RESPONSE_FORMATS)}.",
                       "response_format", "invalid_value")
    granularities = list_field(form, "timestamp_granularities")
    if set(granularities) - set(GRANULARITIES) or (granularities and fmt != "verbose_json"):
        raise ApiError(400, f"timestamp_granularities[] takes word and/or segment, with response_format "
                            f"verbose_json only; got {granularities} with {fmt}.", "timestamp_granularities",
                       "invalid_value")
    stream = parse_stream(text_field(form, "stream"))
    if stream and fmt not in STREAM_FORMATS:
        raise ApiError(400, f"stream=true sends the text as events: use response_format json or text, not {fmt}.",
                       "stream", "invalid_value")
    language = text_field(form, "language") or None
    if served_language and language and language != served_language:
        raise ApiError(400, f"language {language!r} is not served here: this server loads the {served_language} "
                            "adapter (start another with --language for another one).", "language", "invalid_value")
    hotwords = list_field(form, "hotwords") + list_field(form, "keywords")
    return Asked(upload, fmt, "word" in granularities, not granularities or "segment" in granularities, stream,
                 language, hotwords)


def segments_of(transcript: Transcript) -> list[dict]:
    """verbose_json's segments: the subtitle cues' stretches of words (cut at pauses). Whisper's decoding statistics
    have no CTC counterpart: seek 0, tokens [], temperature 0.0, compression_ratio 1.0, no_speech_prob 0.0, and
    avg_logprob the mean log of the words' confidence."""
    out = []
    for i, (segment, words) in enumerate(zip(transcript.segments, cue_words(transcript.words))):
        logprob = sum(math.log(max(w["confidence"], MIN_CONFIDENCE)) for w in words) / len(words)
        out.append({"id": i, "seek": 0, "start": segment["start"], "end": segment["end"], "text": segment["text"],
                    "tokens": [], "temperature": 0.0, "avg_logprob": round(logprob, 4), "compression_ratio": 1.0,
                    "no_speech_prob": 0.0})
    return out


def render(asked: Asked, transcript: Transcript, language: str) -> Response:
    """The transcript in the format asked for."""
    fmt = asked.response_format
    if fmt == "text":
        return PlainTextResponse(transcript.text)
    if fmt in ("srt", "vtt"):
        return PlainTextResponse(subtitle_text(f".{fmt}", transcript.words),
                                 media_type="text/vtt" if fmt == "vtt" else "text/plain")
    usage = {"type": "duration", "seconds": transcript.duration}
    if fmt == "json":
        return JSONResponse({"text": transcript.text, "usage": usage})
    return JSONResponse({"task": "transcribe", "language": language, "duration": transcript.duration,
                         "text": transcript.text, "segments": segments_of(transcript) if asked.segments else None,
                         "words": transcript.words if asked.words else None, "usage": usage})


def event(data: dict) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
