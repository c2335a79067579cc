# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Audio files: their headers, and decoding to mono float32 at the model's rate (soundfile + soxr, no FFmpeg).
Preprocessing (step 4), tar shards and the transcription engine use it; the engine writes arrays of samples as
float WAV files (write_array) to read them as it reads any recording."""

import io
import os

import numpy as np
import soundfile as sf
import soxr

AUDIO_EXTENSIONS = (".flac", ".wav", ".mp3", ".ogg", ".opus")  # what soundfile decodes and we look for in folders
AUDIO_ERRORS = (sf.LibsndfileError, RuntimeError, OSError, ValueError, TypeError)  # what a bad file raises in decoding
TRUNCATION_TOLERANCE = 0.9  # a file decoding to less than this share of its header's length is truncated


def audio_source(value):
    """A path or a file object from an audio cell (a path string, or datasets' undecoded {'path', 'bytes'} dict)."""
    if isinstance(value, dict):
        return io.BytesIO(value["bytes"]) if value.get("bytes") else value.get("path")
    return value


def read_header(source) -> tuple[int, int, int, str]:
    """A file's frames, sampling rate and channels from its header (nothing decoded), and why it is unusable: "missing
    file", "unreadable audio", "empty audio", or "" for a good one."""
    if source is None or (isinstance(source, str) and not os.path.isfile(source)):
        return 0, 0, 0, "missing file"
    try:
        with sf.SoundFile(source) as f:  # the header only (sf.info also formats descriptions: 2x slower)
            frames, rate, channels = f.frames, f.samplerate, f.channels
    except AUDIO_ERRORS:
        return 0, 0, 0, "unreadable audio"
    return frames, rate, channels, "" if frames > 0 else "empty audio"


def load_audio(source, sampling_rate: int) -> np.ndarray:
    """Decode a file (path or file object) to mono float32 at `sampling_rate` Hz."""
    audio, rate = sf.read(source, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != sampling_rate:
        audio = soxr.resample(audio, rate, sampling_rate)
    return audio.astype(np.float32, copy=False)


def write_array(samples: np.ndarray, rate: int, path: str) -> str:
    """Samples (mono, or [samples, channels]; float in [-1, 1] or int16) written as a float WAV file at `path`. A
    ValueError says what an array that is neither holds."""
    samples = np.asarray(samples)
    if samples.dtype == np.int16:
        samples = samples.astype(np.float32) / 32768
    if samples.ndim not in (1, 2) or not np.issubdtype(samples.dtype, np.floating) or not samples.size:
        raise ValueError(f"audio arrays hold float samples (or int16), as [samples] or [samples, channels]; got "
                         f"{samples.dtype} of shape {samples.shape}.")
    sf.write(path, samples.astype(np.float32, copy=False), rate, subtype="FLOAT")
    return path
