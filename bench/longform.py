"""Long recordings: transcribe.py on clips joined into 10-minute, 1-hour and 4-hour recordings, against the same
clips one by one and against the transformers pipeline's chunking.

    python bench/longform.py --model outputs/demo          # the demo's trained model (run the demo first)
    python bench/longform.py --model outputs/demo --lengths 600 --skip_pipeline    # a quick look
    python bench/longform.py --model outputs/demo --lengths 600 --skip_pipeline --subtypes PCM_16   # 16-bit only
    python bench/longform.py --model outputs/demo --lengths 600 --skip_pipeline --noise_db -60      # a room's noise

The recordings join the clips of --corpus, a split folder with metadata.csv (default examples/demo_corpus/test, as
in bench/RESULTS.md: voices the demo model never heard), repeated in shuffled order, with pauses of 0.3 to 1.0 s of
digital silence, written as 16 kHz WAV block by block (never whole in memory), once per --subtypes: PCM_16 (16-bit,
as recorders, phones and most corpora write audio; the clips' near-silent first samples round to zero) and FLOAT
(32-bit float, which keeps them exactly), both by default, the same audio in each. A manifest keeps where each clip
starts and ends and where its speech begins (the first 10 ms whose energy passes a threshold). With --noise_db, a
steady white noise at that level (dB against full scale) lies under the whole recording, as a room's does, and the
clips one by one are the recording's own stretches, cut at each clip's ends. Prints a row per length and subtype: WER
against the joined references, first-word timing, peak memory and speed.
"""

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import jiwer
import numpy as np
import soundfile as sf

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from ctc_finetune.audio import load_audio  # noqa: E402

RATE = 16_000  # Hz, the demo model's rate
SUBTYPES = ["PCM_16", "FLOAT"]  # soundfile's WAV subtypes the recordings are written in: 16-bit and 32-bit float
ONSET_THRESHOLD = 0.05  # a 10 ms frame is speech once its RMS passes this share of the clip's loudest frame's
TIMING_TOLERANCE = 0.15  # seconds: a clip's first word should start this close to its speech onset


def speech_onset(audio: np.ndarray) -> float:
    """Seconds into a clip where speech begins: the first 10 ms frame above the energy threshold."""
    frame = RATE // 100
    rms = np.sqrt(np.mean(audio[: len(audio) // frame * frame].reshape(-1, frame) ** 2, axis=1))
    return float(np.argmax(rms > ONSET_THRESHOLD * rms.max())) * frame / RATE


def read_clips(corpus: str) -> list[dict]:
    with open(os.path.join(corpus, "metadata.csv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    clips = []
    for row in rows:
        audio = load_audio(os.path.join(corpus, row["file_name"]), RATE)
        clips.append({"path": os.path.join(corpus, row["file_name"]), "text": row["sentence"], "audio": audio,
                      "onset": speech_onset(audio)})
    return clips


def join(clips: list[dict], seconds: float, path: str, seed: int, subtype: str, noise: float = 0.0) -> list[dict]:
    """Write a recording of about `seconds` of the clips, shuffled and repeated, with pauses, as a WAV of `subtype`,
    with white noise of RMS `noise` under all of it; return its manifest (the same for every subtype and noise: the
    seed alone sets the order and the pauses)."""
    rng, hiss = np.random.default_rng(seed), np.random.default_rng(seed + 1)

    def write(out, audio: np.ndarray) -> None:
        out.write(audio + (hiss.standard_normal(len(audio)) * noise).astype(np.float32) if noise else audio)
    manifest, at = [], 0
    with sf.SoundFile(path, "w", samplerate=RATE, channels=1, format="WAV", subtype=subtype) as out:
        while at < seconds * RATE:
            for i in rng.permutation(len(clips)):
                pause = np.zeros(int(rng.uniform(0.3, 1.0) * RATE), np.float32)
                write(out, pause)
                at += len(pause)
                clip = clips[i]
                manifest.append({"path": clip["path"], "start": at / RATE, "end": (at + len(clip["audio"])) / RATE,
                                 "text": clip["text"], "onset": at / RATE + clip["onset"]})
                write(out, clip["audio"])
                at += len(clip["audio"])
                if at >= seconds * RATE:
                    break
    return manifest


def run_timed(script: str, argv: list) -> dict:
    """A command of the repository (transcribe.py, align.py) in a subprocess: wall seconds in all and of its work
    alone (its summary line's, the model loaded), peak RSS (GB, from /usr/bin/time), and its log."""
    command = [sys.executable, os.path.join(ROOT, script), *argv]
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *command], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"error: {script} failed: {proc.stderr.strip().splitlines()[-2:]}")
    working = float(re.search(r"\) in ([\d,.]+) s: real-time factor", proc.stderr)[1].replace(",", ""))
    return {"wall": wall, "working": working, "rss_gb": int(proc.stderr.strip().splitlines()[-1]) / 2**20,
            "log": proc.stderr}


def run_transcribe(model: str, audio: list[str], output: str, extra=()) -> dict:
    """transcribe.py in a subprocess (run_timed): "transcribing" is its work alone."""
    run = run_timed("transcribe.py", [model, *audio, "--output", output, *extra])
    return {**run, "transcribing": run["working"]}


def first_word_errors(manifest: list[dict], words: list[dict]) -> np.ndarray:
    """Per clip of the recording: how far (seconds) its first word's start is from its speech onset."""
    starts = np.array([w["start"] for w in words])
    errors = []
    for clip in manifest:
        inside = np.flatnonzero((starts >= clip["start"] - 0.2) & (starts < clip["end"]))
        errors.append(abs(starts[inside[0]] - clip["onset"]) if inside.size else np.inf)
    return np.array(errors)


def pipeline_run(model: str, path: str, chunk: float, stride: float) -> tuple[str, float]:
    """The transformers pipeline's chunked CTC inference on the recording as a numpy array: text, wall seconds."""
    import transformers

    asr = transformers.pipeline("automatic-speech-recognition", model=model, device="cpu")
    audio = load_audio(path, RATE)
    start = time.perf_counter()
    text = asr(audio, chunk_length_s=chunk, stride_length_s=stride)["text"]
    return text, time.perf_counter() - start


def tiny_family_models(work: str) -> dict:
    """Random tiny checkpoints shaped as the releases of two feature-frame families (tests/tiny_models.py): Parakeet
    (80 ms frames, its own subword tokenizer) and Wav2Vec2-BERT (20 ms frames, a character tokenizer)."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from tiny_models import make_checkpoint
    from transformers import Wav2Vec2CTCTokenizer

    from ctc_finetune.text import build_vocab

    w2v_bert = os.path.join(work, "w2v-bert")
    os.makedirs(w2v_bert, exist_ok=True)
    with open(os.path.join(w2v_bert, "vocab.json"), "w") as f:
        json.dump(build_vocab(["abcdefghijklmnopqrstuvwxyz'"], "|", "[UNK]", "[PAD]"), f)
    tokenizer = Wav2Vec2CTCTokenizer(os.path.join(w2v_bert, "vocab.json"))
    make_checkpoint(w2v_bert, "wav2vec2-bert", ctc_vocab_size=len(tokenizer))
    tokenizer.save_pretrained(w2v_bert)
    return {"parakeet_ctc": make_checkpoint(os.path.join(work, "parakeet"), "parakeet_ctc"), "wav2vec2-bert": w2v_bert}


def own_stretches(model: str, path: str, manifest: list[dict], work: str) -> str:
    """The recording's stretch of each clip (its start to its end, noise and all), transcribed one by one: their
    transcripts joined, in the recording's order."""
    audio, _ = sf.read(path, dtype="float32")
    folder = os.path.join(work, "stretches")
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, clip in enumerate(manifest):
        paths.append(os.path.join(folder, f"{i:05d}.wav"))
        sf.write(paths[-1], audio[round(clip["start"] * RATE):round(clip["end"] * RATE)], RATE, subtype="FLOAT")
    run_transcribe(model, paths, os.path.join(work, "stretches.csv"))
    with open(os.path.join(work, "stretches.csv"), encoding="utf-8") as f:
        by_path = {r["path"]: r["transcript"] for r in csv.DictReader(f)}
    return " ".join(by_path[p] for p in paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.path.join(ROOT, "outputs", "demo"))
    parser.add_argument("--corpus", default=os.path.join(ROOT, "examples", "demo_corpus", "test"))
    parser.add_argument("--lengths", type=float, nargs="+", default=[600, 3600, 14400], help="Seconds per recording.")
    parser.add_argument("--chunk_seconds", type=float, default=20.0)
    parser.add_argument("--context_seconds", type=float, default=4.0)
    parser.add_argument("--subtypes", nargs="+", default=SUBTYPES, choices=SUBTYPES,
                        help="How the recordings are written: 16-bit (PCM_16) and/or 32-bit float (FLOAT) WAV.")
    parser.add_argument("--skip_pipeline", action="store_true")
    parser.add_argument("--skip_families", action="store_true", help="Skip the Parakeet and Wav2Vec2-BERT runs.")
    parser.add_argument("--noise_db", type=float, default=None,
                        help="A steady noise under the recordings at this level, e.g. -60 (dB full scale).")
    parser.add_argument("--work_dir", default=None, help="Where the recordings go (default: a temporary folder).")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.model, "config.json")):
        sys.exit(f"error: {args.model} is no model; run the demo first (python run_speech_recognition_ctc.py "
                 "examples/demo.json) or pass --model.")
    if not os.path.isfile(os.path.join(args.corpus, "metadata.csv")):
        sys.exit(f"error: no {args.corpus}/metadata.csv; pass --corpus, a split folder with metadata.csv "
                 "(file_name, sentence): default examples/demo_corpus/test, what the recorded figures used.")
    work = args.work_dir or tempfile.mkdtemp(prefix="longform-")
    os.makedirs(work, exist_ok=True)
    clips = read_clips(args.corpus)

    # Clip by clip: the reference the long-form transcript is held to.
    alone = run_transcribe(args.model, [c["path"] for c in clips], os.path.join(work, "clips.csv"))
    with open(os.path.join(work, "clips.csv"), encoding="utf-8") as f:
        by_clip = {r["path"]: r["transcript"] for r in csv.DictReader(f)}
    clip_wer = jiwer.wer([c["text"] for c in clips], [by_clip[c["path"]] for c in clips])
    audio_alone = sum(len(c["audio"]) for c in clips) / RATE
    print(f"clip by clip: {len(clips)} clips, {audio_alone:.0f} s, WER {clip_wer:.3f}, "
          f"{audio_alone / alone['transcribing']:.0f} audio s/s")

    flags = ["--chunk_seconds", str(args.chunk_seconds), "--context_seconds", str(args.context_seconds)]
    rows = []
    noise = 10 ** (args.noise_db / 20) if args.noise_db is not None else 0.0  # white noise's RMS
    for seconds in args.lengths:
        for subtype in args.subtypes:
            path = os.path.join(work, f"joined-{seconds:.0f}s-{subtype}.wav")
            manifest = join(clips, seconds, path, seed=int(seconds), subtype=subtype, noise=noise)
            output = os.path.join(work, f"joined-{seconds:.0f}s-{subtype}.json")
            run = run_transcribe(args.model, [path], output, flags)
            with open(output, encoding="utf-8") as f:
                (record,) = json.load(f)
            reference = " ".join(c["text"] for c in manifest)
            wer = jiwer.wer(reference, record["text"])
            # the recording's clips (repeats included) transcribed one by one, scored as the recording is
            same_clips = jiwer.wer(reference, " ".join(by_clip[c["path"]] for c in manifest) if not noise else
                                   own_stretches(args.model, path, manifest, work))
            errors = first_word_errors(manifest, record["words"])
            rows.append({"seconds": record["duration"], "subtype": subtype, "wer": wer,
                         "within": float((errors <= TIMING_TOLERANCE).mean()),
                         "median_error": float(np.median(errors)), "rss_gb": run["rss_gb"],
                         "speed": record["duration"] / run["transcribing"]})
            print(f"{seconds / 60:.0f} min, {subtype}: WER {wer:.3f} (its clips one by one {same_clips:.3f}), first "
                  f"word within {TIMING_TOLERANCE} s of the speech onset for {rows[-1]['within']:.1%} of {len(manifest)} "
                  f"clips "
                  f"(median error {rows[-1]['median_error']:.3f} s), peak RSS {run['rss_gb']:.2f} GB, "
                  f"{rows[-1]['speed']:.0f} audio s/s (transcribing; {run['wall']:.1f} s in all with start-up)",
                  flush=True)
            if not args.skip_pipeline and seconds == min(args.lengths) and subtype == args.subtypes[0]:
                text, wall = pipeline_run(args.model, path, args.chunk_seconds + 2 * args.context_seconds,
                                          args.context_seconds)
                pipe_wer = jiwer.wer(" ".join(c["text"] for c in manifest), text)
                print(f"  pipeline(chunk_length_s={args.chunk_seconds + 2 * args.context_seconds:g}, "
                      f"stride_length_s={args.context_seconds:g}) on the same recording: WER {pipe_wer:.3f}, "
                      f"{record['duration'] / wall:.0f} audio s/s (the model already loaded, the audio in memory); "
                      f"ours {rows[-1]['speed'] / (record['duration'] / wall):.2f}x as fast")
    if not args.skip_families and len(args.lengths) > 1:  # the shortest and the second recording, random weights
        recordings = [os.path.join(work, f"joined-{seconds:.0f}s-{args.subtypes[0]}.wav")
                      for seconds in args.lengths[:2]]
        for family, model in tiny_family_models(work).items():
            runs = [run_transcribe(model, [r], os.path.join(work, "family.json"), flags) for r in recordings]
            print(f"{family} (random tiny model): peak RSS {runs[0]['rss_gb']:.2f} GB at "
                  f"{args.lengths[0] / 60:.0f} min, {runs[1]['rss_gb']:.2f} GB at {args.lengths[1] / 60:.0f} min "
                  f"({runs[1]['rss_gb'] / runs[0]['rss_gb']:.2f}x); "
                  f"{args.lengths[1] / runs[1]['transcribing']:.0f} audio s/s", flush=True)
    if len(args.lengths) > 1:
        for subtype in args.subtypes:
            own = [r for r in rows if r["subtype"] == subtype]
            print(f"{subtype}: peak RSS longest/shortest: {own[-1]['rss_gb'] / own[0]['rss_gb']:.2f}x; speed spread: "
                  f"{(max(r['speed'] for r in own) - min(r['speed'] for r in own)) / max(r['speed'] for r in own):.1%}")


if __name__ == "__main__":
    main()
