#!/usr/bin/env python
"""Synthesise the commands corpus, the corpus the figures in bench/RESULTS.md were measured on.

    apt-get install espeak-ng flite && python tools/make_bench_corpus.py DIR
    python bench/families.py --corpus DIR                   # then any bench script with --corpus DIR
    python tools/make_bench_corpus.py DIR --train 20 --validation 5 --test 5     # a quick look

Every clip is a home-automation command from a 57-word grammar (numbers, colours, objects, rooms, units), sometimes
several chained with "and" (0.7 s to 15 s). 2,000 train clips (MP3, about 40 kbit/s), 250 validation and 250 test
clips (FLAC). Voices: 7 espeak-ng English accents x 10 variants at 130-210 words per minute and random pitch, and
three flite voices for about a quarter of the clips. Each synthesiser's own sampling rate is kept (espeak-ng
22,050 Hz, flite 16,000 Hz), mixed within every split, so the training script's resampling path runs. Each split
folder gets a metadata.csv: file_name,sentence,speaker,rate,duration (rate in words per minute, duration in seconds).

With the default sizes and --seed 1 it draws the same sentences, voices and rates as the corpus of the recorded
figures; other espeak-ng and flite versions may give slightly different audio. The demo corpus
(examples/make_demo_corpus.py, whose synthesis helpers this script uses) is its smaller sibling: 29 words, espeak-ng
only.
"""

import argparse
import os
import random
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import soundfile as sf

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
from make_demo_corpus import espeak, require_programs, save, write_metadata  # noqa: E402

# The draws below are in the order of the generator the recorded corpus was made with: reordering a list, or a
# draw, changes every clip after it.
NUMBERS = "zero one two three four five six seven eight nine ten twenty thirty".split()
COLORS = "red green blue yellow white black orange purple".split()
OBJECTS = "light door window fan heater radio speaker camera alarm".split()
ROOMS = "kitchen bedroom garage office hallway garden".split()
UNITS = "minutes seconds hours degrees percent".split()
CHAIN_LENGTHS = [1, 1, 1, 1, 2, 3, 5]  # commands per clip, drawn uniformly: most clips hold one
ACCENTS = ["en-gb", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-us-nyc"]
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3"]
FLITE_VOICES = ["kal16", "slt", "rms"]
FLITE_SHARE = 0.25  # of the clips spoken by flite
FLITE_RATE = 150  # words per minute flite speaks at duration_stretch 1
MP3_COMPRESSION = 0.8  # soundfile's compression_level: about 40 kbit/s, as crowd-sourced corpora ship
SPLITS = {"train": (2000, "mp3"), "validation": (250, "flac"), "test": (250, "flac")}


def sentence(rng: random.Random) -> str:
    """One to five commands of the grammar, joined by "and"."""
    def number():
        return " ".join(rng.choice(NUMBERS) for _ in range(rng.randint(1, 2)))

    templates = [
        lambda: f"turn {rng.choice(['on', 'off'])} the {rng.choice(COLORS)} {rng.choice(OBJECTS)}",
        lambda: f"open the {rng.choice(ROOMS)} {rng.choice(['door', 'window'])}",
        lambda: f"set the {rng.choice(OBJECTS)} to {number()} {rng.choice(UNITS)}",
        lambda: f"move the {rng.choice(COLORS)} {rng.choice(OBJECTS)} to the {rng.choice(ROOMS)}",
        lambda: f"stop the {rng.choice(OBJECTS)} in the {rng.choice(ROOMS)}",
        lambda: " ".join(rng.choice(NUMBERS) for _ in range(rng.randint(3, 6))),
        lambda: f"is the {rng.choice(OBJECTS)} {rng.choice(['on', 'off', 'open', 'closed'])}",
        lambda: f"wait {number()} {rng.choice(UNITS)} then call the {rng.choice(ROOMS)}",
    ]
    return " and ".join(rng.choice(templates)() for _ in range(rng.choice(CHAIN_LENGTHS)))


def plan(rng: random.Random, split: str, count: int, extension: str, split_dir: str) -> tuple[list, list]:
    """The metadata rows (without durations) and synthesis jobs of a split's clips."""
    rows, jobs = [], []
    for i in range(count):
        text = sentence(rng)
        rate = rng.randint(130, 210)
        if rng.random() < FLITE_SHARE:
            engine, voice, pitch = "flite", rng.choice(FLITE_VOICES), 0
        else:
            engine, voice, pitch = "espeak-ng", f"{rng.choice(ACCENTS)}+{rng.choice(VARIANTS)}", rng.randint(25, 75)
        file_name = f"{split}-{i:05d}.{extension}"
        rows.append({"file_name": file_name, "sentence": text, "speaker": voice, "rate": rate})
        jobs.append((engine, voice, rate, pitch, text, os.path.join(split_dir, file_name)))
    return rows, jobs


def flite(voice: str, rate: int, text: str):
    """flite's audio of `text` at about `rate` words per minute, at its own 16 kHz: (samples, rate)."""
    with tempfile.TemporaryDirectory(prefix="flite-") as tmp:
        wav = os.path.join(tmp, "clip.wav")  # flite writes a file, not a stream
        subprocess.run(["flite", "-voice", voice, "--setf", f"duration_stretch={FLITE_RATE / rate:.3f}", "-t", text,
                        "-o", wav], capture_output=True, check=True)
        return sf.read(wav, dtype="float32")


def speak(job) -> float:
    """Synthesise one clip to its file; returns its duration in seconds."""
    engine, voice, rate, pitch, text, path = job
    audio, sampling_rate = espeak(voice, rate, pitch, text) if engine == "espeak-ng" else flite(voice, rate, text)
    return save(path, audio, sampling_rate, MP3_COMPRESSION)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    for split, (count, extension) in SPLITS.items():
        parser.add_argument(f"--{split}", type=int, default=count, help=f"Clips in {split}/ ({extension}).")
    parser.add_argument("--seed", type=int, default=1, help="1: the draws of the corpus of the recorded figures.")
    args = parser.parse_args()
    for split in SPLITS:
        if getattr(args, split) < 1:
            parser.error(f"--{split} {getattr(args, split)}: give at least 1 clip")
    require_programs("espeak-ng", "flite")
    rng = random.Random(args.seed)
    for split, (_, extension) in SPLITS.items():
        split_dir = os.path.join(args.out_dir, split)
        os.makedirs(split_dir, exist_ok=True)
        rows, jobs = plan(rng, split, getattr(args, split), extension, split_dir)
        with ThreadPoolExecutor(os.cpu_count() * 2) as pool:
            seconds = list(pool.map(speak, jobs))
        for row, duration in zip(rows, seconds):
            row["duration"] = round(duration, 3)
        write_metadata(split_dir, rows)
        print(f"{split}: {len(rows):,} clips, {sum(seconds) / 60:.1f} min")


if __name__ == "__main__":
    main()
