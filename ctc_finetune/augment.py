# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Training-time augmentation (steps 4 and 5): speed perturbation by resampling, room reverberation and additive
noise (audiomentations), and silence padding (quiet before and after the clip, as a longer recording or a window of a
stream would hold it), applied to each training clip's waveform as its batch is made, in the DataLoader workers.

Preprocessing keeps a training split's decoded waveform instead of its features when any of this is on (cached, on
the fly or streamed alike); batching.DataCollatorCTCWithPadding plays each such clip through the Augmenter, then
extracts its features. Evaluation splits hold features, so they are never augmented.
"""

import logging
import os
import random
import warnings
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import soxr

from .audio import AUDIO_EXTENSIONS, read_header
from .faults import UserError

logger = logging.getLogger(__name__)

AUGMENT_INSTALL = "bash tools/install_extras.sh augment"
KINDS = ("speed", "reverb", "noise", "pad")  # in the order they are applied, and of the counts the collator reports
FLOOR_FRAME_SECONDS = 0.01  # a clip's noise floor is the RMS of its quietest 10 ms frames,
FLOOR_PERCENTILE = 5  # the 5th percentile of them
PCM16_STEP = 1 / 32768  # one step of 16-bit audio, in float full scale
QUIET_OVER_FLOOR = 3.0  # a clip's trailing quiet: 10 ms frames under 3 times its noise floor,
QUIET_SHARE = 1e-3  # or under this share of its loudest frame's RMS, whichever is higher
KEEP_TAIL_SECONDS = 0.1  # trailing quiet a clip keeps when the rest moves before its speech
# audiomentations warns each time it resamples a noise or impulse-response file that is not at the model's rate: with
# a corpus of noise at 44.1 kHz, once per file and worker. It is said once, in build_augmenter.
warnings.filterwarnings("ignore", message=".* had to be resampled from", category=UserWarning)


@dataclass
class AugmentArguments:
    """Augmentation of training clips, as their batches are made; evaluation never sees it."""

    _argument_group_name = "Augmentation (ctc_finetune/augment.py)"

    speed_perturbation: Optional[list[float]] = field(
        default=None,
        metadata={"help": "Play each training batch at a speed drawn from these factors, e.g. 0.9 1.0 1.1, by "
                          "resampling (tempo and pitch change together, as in Kaldi and ESPnet)."},
    )
    noise_dir: Optional[str] = field(
        default=None,
        metadata={"help": "Folder of noise recordings (e.g. MUSAN) added to training clips (the augment extra)."},
    )
    noise_snr_db: list[float] = field(
        default_factory=lambda: [5.0, 20.0],
        metadata={"help": "LOW HIGH: the signal-to-noise ratio of --noise_dir's noise, in dB, drawn uniformly."},
    )
    noise_prob: float = field(default=0.5, metadata={"help": "Share of training clips that get --noise_dir's noise."})
    rir_dir: Optional[str] = field(
        default=None,
        metadata={"help": "Folder of room impulse responses training clips are convolved with (the augment extra)."},
    )
    rir_prob: float = field(default=0.5, metadata={"help": "Share of training clips --rir_dir reverberates."})
    silence_padding: Optional[float] = field(
        default=None,
        metadata={"help": "Start training clips 0 to this many seconds (e.g. 0.4) later, behind quiet: their own "
                          "trailing quiet first, then quiet at the clip's noise floor or as 16-bit silence, so the "
                          "model does not depend on where speech starts."},
    )
    silence_padding_prob: float = field(default=0.5, metadata={"help": "Share of training batches --silence_padding "
                                                                        "pads."})

    def __post_init__(self):
        if self.speed_perturbation is not None and not all(0.5 <= s <= 2.0 for s in self.speed_perturbation):
            raise UserError("--speed_perturbation takes speed factors between 0.5 and 2, e.g. 0.9 1.0 1.1.")
        if len(self.noise_snr_db) != 2 or self.noise_snr_db[0] > self.noise_snr_db[1]:
            raise UserError(f"--noise_snr_db takes LOW HIGH in dB (e.g. 5 20), got {self.noise_snr_db}.")
        if not all(0.0 <= share <= 1.0 for share in (self.noise_prob, self.rir_prob, self.silence_padding_prob)):
            raise UserError("--noise_prob, --rir_prob and --silence_padding_prob are shares of clips, between 0 and 1.")
        if self.silence_padding is not None and not 0 < self.silence_padding <= 5:
            raise UserError(f"--silence_padding takes the most seconds of quiet added to a clip, e.g. 0.5; got "
                            f"{self.silence_padding}.")
        check_augmentation(self)


def augmenting(args: AugmentArguments) -> bool:
    """Whether training clips are augmented (so preprocessing keeps their waveforms)."""
    return bool(args.speed_perturbation or args.noise_dir or args.rir_dir or args.silence_padding)


def frame_rms(audio: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    """The RMS of each whole 10 ms frame of a clip, and the frame's length in samples."""
    frame = max(round(rate * FLOOR_FRAME_SECONDS), 1)
    frames = audio[: len(audio) // frame * frame].reshape(-1, frame)
    return np.sqrt(np.mean(frames ** 2, axis=1)), frame


def noise_floor(audio: np.ndarray, rate: int) -> float:
    """The RMS of a clip's quietest stretches (its recording's noise; 0 for digital silence)."""
    rms, _ = frame_rms(audio, rate)
    return float(np.percentile(rms, FLOOR_PERCENTILE)) if rms.size else 0.0


def trailing_quiet(audio: np.ndarray, rate: int) -> int:
    """Samples of quiet at a clip's end (whole 10 ms frames under its QUIET_OVER_FLOOR x noise floor or QUIET_SHARE
    of its loudest frame): the silence a recorded or synthesised clip usually ends in."""
    rms, frame = frame_rms(audio, rate)
    if not rms.size:
        return 0
    threshold = max(QUIET_OVER_FLOOR * float(np.percentile(rms, FLOOR_PERCENTILE)), QUIET_SHARE * float(rms.max()))
    loud = np.flatnonzero(rms >= threshold)
    return (rms.size - 1 - int(loud[-1])) * frame if loud.size else rms.size * frame


def pad_with_quiet(audio: np.ndarray, lead: int, tail: int, floor: Optional[float],
                   rng: np.random.Generator) -> np.ndarray:
    """`lead` and `tail` samples of quiet around a clip: noise at `floor` RMS (the clip's own noise floor, so its
    recording goes on), or, with `floor` None, the clip as a dithered 16-bit recording holds it: rounded to 16-bit
    steps after triangular dither of one step, so the quiet around it is a step or two of noise and its quietest onset
    is lost in it."""
    if floor is None:
        padded = np.concatenate([np.zeros(lead, np.float32), audio, np.zeros(tail, np.float32)])
        dither = rng.uniform(-0.5, 0.5, (2, len(padded))).sum(axis=0)  # triangular, in steps
        return (np.round(padded / PCM16_STEP + dither) * PCM16_STEP).astype(np.float32)
    quiet = rng.standard_normal(lead + tail).astype(np.float32) * floor
    return np.concatenate([quiet[:lead], audio, quiet[lead:]]).astype(np.float32)


def audio_files(folder: str, flag: str) -> list[str]:
    """Every readable audio file under `folder`, sorted; a missing or empty folder, or an unreadable file, is a user
    error naming the fix."""
    if not os.path.isdir(folder):
        raise UserError(f"{flag} {folder} is not a folder; pass a folder of audio files (.wav, .flac, ...).")
    files = sorted(os.path.join(root, name) for root, _, names in os.walk(folder) for name in names
                   if name.lower().endswith(AUDIO_EXTENSIONS))
    if not files:
        raise UserError(f"{flag} {folder} holds no audio files ({', '.join(AUDIO_EXTENSIONS)}); point it at a folder "
                        "of noise or impulse-response recordings.")
    bad = [f for f in files if read_header(f)[3]]
    if bad:
        raise UserError(f"{flag}: {len(bad):,} of {len(files):,} files in {folder} are unreadable or empty (first: "
                        f"{bad[0]}); remove or re-encode them.")
    return files


def check_augmentation(args: AugmentArguments) -> None:
    """Before any work: the noise and impulse-response folders hold readable audio, and audiomentations is there."""
    folders = [(d, f) for d, f in ((args.noise_dir, "--noise_dir"), (args.rir_dir, "--rir_dir")) if d]
    for folder, flag in folders:
        audio_files(folder, flag)
    if folders:
        try:
            import audiomentations  # noqa: F401 - only whether it is there
        except ImportError as e:
            raise UserError(f"--noise_dir and --rir_dir use the audiomentations package; run `{AUGMENT_INSTALL}`.") \
                from e


def fastest_speeds(lengths, min_frames, frames, mask_time_frames: int, speeds) -> np.ndarray:
    """Per clip, the fastest factor of `speeds` at which it still has the output frames its label needs under CTC
    (and SpecAugment's mask length); 1.0 where none is. `frames(samples, before_adapter=False)`: clip_limits'."""
    lengths, fastest = np.asarray(lengths, dtype=np.float64), np.ones(len(lengths))
    for speed in sorted(speeds):
        played = np.round(lengths / speed).astype(np.int64)
        fits = ((frames(played) >= np.asarray(min_frames))
                & (frames(played, before_adapter=True) >= mask_time_frames))
        fastest = np.where(fits & (speed > fastest), speed, fastest)  # kept clips fit at 1.0, so at any slower factor
    return fastest


class Augmenter:
    """Speed perturbation, reverberation and noise for one clip at a time: `augmenter(audio, factor)` returns the
    played audio and which kinds (KINDS) changed it.

    - Speed: a factor drawn from `speeds` once per batch (`draw_speed`: those up to the fastest every clip of the
      batch allows, see fastest_speeds), played by resampling, so the pitch moves with the tempo, as Kaldi's and
      ESPnet's speed perturbation does. One factor a batch, as SpeechBrain's SpeedPerturb: the clips of a batch
      were grouped by length, and factors drawn per clip would pad it (3.5% padding became 10.9% with 0.9/1.0/1.1,
      and training 12% slower).
    - Reverberation (`rir_files`, with probability `rir_prob`): convolution with a room impulse response.
    - Noise (`noise_files`, with probability `noise_prob`): a stretch of a noise file added at an SNR drawn
      uniformly from `snr_db`.
    - Silence padding (`pad_seconds`, on `pad_prob` of the batches, drawn once a batch by `draw_padding`): each
      clip of a padded batch starts 0 to `pad_seconds` later, drawn clip by clip, so the model does not depend on
      where speech starts in its input: a window of a long recording or a stream, or a user's own recording, starts
      wherever it starts. The quiet before the speech is first the clip's own trailing quiet (beyond
      KEEP_TAIL_SECONDS), moved to its start, so a clip that ends in silence, as most recorded and synthesised clips
      do, barely grows; the rest is added as pad_with_quiet makes it (half the clips at their own noise floor, half
      as a dithered 16-bit recording). Quiet only added (one amount a batch, split between before and after) cost
      the demo 11% of training time and 0.02 of WER over three seeds; amounts drawn per clip and added grew its
      batches' padding from 2% to 14%.

    Picklable, for the DataLoader workers; each worker draws from its own seeded generators.
    """

    def __init__(self, rate: int, speeds=(), noise_files=(), snr_db=(5.0, 20.0), noise_prob: float = 0.5,
                 rir_files=(), rir_prob: float = 0.5, pad_seconds: float = 0.0, pad_prob: float = 0.5):
        self.rate, self.speeds = rate, sorted(speeds)
        self.pad_seconds, self.pad_prob = pad_seconds, pad_prob
        self.noise_files, self.rir_files = list(noise_files), list(rir_files)
        self.steps = {}
        if rir_files:
            from audiomentations import ApplyImpulseResponse

            self.steps["reverb"] = ApplyImpulseResponse(ir_path=list(rir_files), p=rir_prob,
                                                        leave_length_unchanged=True)
        if noise_files:
            from audiomentations import AddBackgroundNoise

            self.steps["noise"] = AddBackgroundNoise(sounds_path=list(noise_files), min_snr_db=snr_db[0],
                                                     max_snr_db=snr_db[1], p=noise_prob)

    def draw_speed(self, fastest=()) -> float:
        """A batch's speed factor: one of `speeds` that every clip's `fastest` allows (a None allows any)."""
        limit = min((f for f in fastest if f is not None), default=None)
        allowed = [s for s in self.speeds if limit is None or s <= limit + 1e-9] or [1.0]
        return random.choice(allowed)

    def speed(self, audio: np.ndarray, factor: float) -> tuple[np.ndarray, bool]:
        if factor == 1.0:
            return audio, False
        # Played `factor` times as fast: read as if sampled at rate * factor, brought back to the rate
        return soxr.resample(audio, self.rate * factor, self.rate).astype(np.float32, copy=False), True

    def draw_padding(self) -> int:
        """A batch's padding: the most samples of quiet before each of its clips, 0 for none."""
        if not self.pad_seconds or random.random() >= self.pad_prob:
            return 0
        return round(self.pad_seconds * self.rate)

    def pad(self, audio: np.ndarray, padding: int) -> tuple[np.ndarray, bool]:
        """The clip's speech moved 0 to `padding` samples later: its own trailing quiet first, then added quiet."""
        if not padding:
            return audio, False
        lead = random.randint(0, padding)
        moved = min(lead, max(0, trailing_quiet(audio, self.rate) - round(KEEP_TAIL_SECONDS * self.rate)))
        body = np.concatenate([audio[len(audio) - moved:], audio[:len(audio) - moved]]) if moved else audio
        floor = noise_floor(audio, self.rate) if random.random() < 0.5 else None
        return pad_with_quiet(body, lead - moved, 0, floor, np.random.default_rng(random.getrandbits(64))), True

    def longest(self, samples):
        """The most samples a clip of `samples` can become (slowest speed, most padding): what batches are sized for."""
        return samples / min([1.0, *self.speeds]) + round(self.pad_seconds * self.rate)

    def __call__(self, audio: np.ndarray, factor: Optional[float] = None,
                 padding: Optional[int] = None) -> tuple[np.ndarray, dict]:
        """The clip played at `factor`, reverberated, noised, then padded by `padding` (each drawn for it alone when
        None)."""
        changed = dict.fromkeys(KINDS, False)
        if self.speeds:
            audio, changed["speed"] = self.speed(audio, self.draw_speed() if factor is None else factor)
        for kind, step in self.steps.items():
            audio = step(samples=audio, sample_rate=self.rate)
            changed[kind] = bool(step.parameters.get("should_apply"))
        audio, changed["pad"] = self.pad(np.asarray(audio, dtype=np.float32),
                                         self.draw_padding() if padding is None else padding)
        return audio, changed

    def describe(self) -> str:
        parts = [f"speed {'/'.join(f'{s:g}' for s in self.speeds)}"] if self.speeds else []
        if "reverb" in self.steps:
            step = self.steps["reverb"]
            parts.append(f"reverberation from {len(step.ir_files):,} impulse responses on {step.p:.0%} of clips")
        if "noise" in self.steps:
            step = self.steps["noise"]
            parts.append(f"noise from {len(step.sound_file_paths):,} files at {step.min_snr_db:g}-{step.max_snr_db:g} "
                         f"dB SNR on {step.p:.0%} of clips")
        if self.pad_seconds:
            parts.append(f"0-{self.pad_seconds:g} s of quiet before the clips of {self.pad_prob:.0%} of batches (their "
                         "own trailing quiet first)")
        return ", ".join(parts)


def build_augmenter(args: AugmentArguments, rate: int, training: bool = True) -> Optional[Augmenter]:
    """The Augmenter the flags ask for, logged in one line; None when none is, or when nothing is trained.
    Preprocessing then keeps the training clips' waveforms (and each clip's fastest speed), and the collator plays
    them through it."""
    if not (training and augmenting(args)):
        return None
    augmenter = Augmenter(
        rate, speeds=args.speed_perturbation or (),
        noise_files=audio_files(args.noise_dir, "--noise_dir") if args.noise_dir else (),
        snr_db=args.noise_snr_db, noise_prob=args.noise_prob,
        rir_files=audio_files(args.rir_dir, "--rir_dir") if args.rir_dir else (),
        rir_prob=args.rir_prob, pad_seconds=args.silence_padding or 0.0,
        pad_prob=args.silence_padding_prob,
    )
    logger.info(f"Augmentation (training clips only, as their batches are made): {augmenter.describe()}")
    rates = {read_header(f)[1] for f in (*augmenter.noise_files, *augmenter.rir_files)} - {rate}
    if rates:
        logger.info(f"Augmentation: noise or impulse responses at {sorted(rates)} Hz are resampled to {rate} Hz as "
                    "they are read (store them at the model's rate to save that work)")
    return augmenter
