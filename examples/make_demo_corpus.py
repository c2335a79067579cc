#!/usr/bin/env python
"""Synthesise the demo corpus: short spoken home-automation commands, 29 words, three splits.

    apt-get install espeak-ng && python examples/make_demo_corpus.py examples/demo_corpus

Every clip is one command of two to five words spoken by espeak-ng at a random rate and pitch, kept at the
synthesiser's own 22.05 kHz as MP3 (so the training script's resampling path runs). Validation and test use
voice variants that training never hears. The committed corpus was made with this script and --seed 0; the
audio is committed, so users need no synthesiser.
"""

import argparse
import csv
import io
import os
import random
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import soundfile as sf

COLORS = ["red", "green", "blue", "white"]
OBJECTS = ["light", "door", "window", "fan", "radio", "heater"]
ROOMS = ["kitchen", "bedroom", "garage", "office"]
NUMBERS = ["one", "two", "three", "four", "five"]
TEMPLATES = [
    lambda r: f"turn {r.choice(['on', 'off'])} the {r.choice(COLORS)} {r.choice(OBJECTS)}",
    lambda r: f"{r.choice(['open', 'close'])} the {r.choice(ROOMS)} {r.choice(['door', 'window'])}",
    lambda r: f"set the {r.choice(OBJECTS)} to {r.choice(NUMBERS)}",
    lambda r: f"{r.choice(['stop', 'start'])} the {r.choice(OBJECTS)}",
    lambda r: f"{r.choice(COLORS)} {r.choice(OBJECTS)} {r.choice(['on', 'off'])}",
    lambda r: f"{r.choice(NUMBERS)} {r.choice(NUMBERS)}",
]
ACCENTS = ["en-gb", "en-us", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-us-nyc", "en-gb-x-gbclan"]
TRAIN_VARIANTS = ["m1", "m2", "m3", "m4", "f1", "f2"]
HELD_OUT_VARIANTS = ["m6", "m7", "f3", "f4"]  # validation and test voices: never heard in training
SPLITS = {"train": (1000, TRAIN_VARIANTS), "validation": (100, HELD_OUT_VARIANTS), "test": (100, HELD_OUT_VARIANTS)}
MP3_COMPRESSION = 0.99  # soundfile's compression_level, 0 to 1: near the lowest bit rate, small files


def require_programs(*programs: str) -> None:
    """Exit with one `error:` line naming the apt-get command when a synthesiser is not installed."""
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        sys.exit(f"error: {' and '.join(missing)} not found; install with: apt-get install {' '.join(programs)}")


def espeak(voice: str, rate: int, pitch: int, text: str):
    """espeak-ng's audio of `text` (rate in words per minute, pitch 0-99) at its own 22.05 kHz: (samples, rate)."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout", text],
                         capture_output=True, check=True).stdout
    return sf.read(io.BytesIO(wav), dtype="float32")


def save(path: str, audio, sampling_rate: int, mp3_compression: float = MP3_COMPRESSION) -> float:
    """Write a clip as MP3 or FLAC, by the path's extension, at its own rate; returns its duration in seconds."""
    extra = {"compression_level": mp3_compression} if path.endswith(".mp3") else {}
    sf.write(path, audio, sampling_rate, format=os.path.splitext(path)[1][1:].upper(), **extra)
    return len(audio) / sampling_rate


def write_metadata(split_dir: str, rows: list[dict]) -> None:
    """The split's metadata.csv (the audiofolder convention: file_name relative to the folder), columns as in rows."""
    with open(os.path.join(split_dir, "metadata.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def speak(job) -> float:
    """Synthesise one clip to MP3; returns its duration in seconds."""
    voice, rate, pitch, text, path = job
    return save(path, *espeak(voice, rate, pitch, text))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    require_programs("espeak-ng")
    rng = random.Random(args.seed)
    for split, (count, variants) in SPLITS.items():
        os.makedirs(os.path.join(args.out_dir, split), exist_ok=True)
        rows, jobs = [], []
        for i in range(count):
            text = rng.choice(TEMPLATES)(rng)
            voice = f"{rng.choice(ACCENTS)}+{rng.choice(variants)}"
            rate, pitch = rng.randint(130, 190), rng.randint(30, 70)
            file_name = f"{split}-{i:04d}.mp3"
            rows.append({"file_name": file_name, "sentence": text, "speaker": voice})
            jobs.append((voice, rate, pitch, text, os.path.join(args.out_dir, split, file_name)))
        with ThreadPoolExecutor(os.cpu_count() * 2) as pool:
            seconds = list(pool.map(speak, jobs))
        write_metadata(os.path.join(args.out_dir, split), rows)
        print(f"{split}: {count} clips, {sum(seconds) / 60:.1f} min")


if __name__ == "__main__":
    main()
