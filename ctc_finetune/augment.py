# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Training-time augmentation (steps 4 and 5): speed perturbation by resampling, room reverberation and additive
noise (audiomentations), applied to each training clip's waveform as its batch is made, in the DataLoader workers.

Preprocessing keeps a training split's decoded waveform instead of its features when any of this is on (cached, on
the fly or streamed alike); batching.DataCollatorCTCWithPadding plays each such clip through the Augmenter, then
extracts its features. Evaluation splits hold features, so they are never augmented.
"""

import logging
import os
import random
import warnings
from typing import Optional

import numpy as np
import soxr

from .audio import AUDIO_EXTENSIONS, read_header
from .faults import UserError

logger = logging.getLogger(__name__)

AUGMENT_INSTALL = "bash tools/install_extras.sh augment"
KINDS = ("speed", "reverb", "noise")  # in the order they are applied, and of the counts the collator reports
# audiomentations warns each time it resamples a noise or impulse-response file that is not at the model's rate: with
# a corpus of noise at 44.1 kHz, once per file and worker. It is said once, in build_augmenter.
warnings.filterwarnings("ignore", message=".* had to be resampled from", category=UserWarning)


def augmenting(data_args) -> bool:
    """Whether training clips are augmented (so preprocessing keeps their waveforms)."""
    return bool(data_args.speed_perturbation or data_args.noise_dir or data_args.rir_dir)


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


def check_augmentation(data_args) -> None:
    """Before any work: the noise and impulse-response folders hold readable audio, and audiomentations is there."""
    folders = [(d, f) for d, f in ((data_args.noise_dir, "--noise_dir"), (data_args.rir_dir, "--rir_dir")) if d]
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

    Picklable, for the DataLoader workers; each worker draws from its own seeded generators.
    """

    def __init__(self, rate: int, speeds=(), noise_files=(), snr_db=(5.0, 20.0), noise_prob: float = 0.5,
                 rir_files=(), rir_prob: float = 0.5):
        self.rate, self.speeds = rate, sorted(speeds)
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

    def __call__(self, audio: np.ndarray, factor: Optional[float] = None) -> tuple[np.ndarray, dict]:
        """The clip played at `factor` (drawn for it alone when None), then reverberated and noised."""
        changed = dict.fromkeys(KINDS, False)
        if self.speeds:
            audio, changed["speed"] = self.speed(audio, self.draw_speed() if factor is None else factor)
        for kind, step in self.steps.items():
            audio = step(samples=audio, sample_rate=self.rate)
            changed[kind] = bool(step.parameters.get("should_apply"))
        return np.asarray(audio, dtype=np.float32), changed

    def describe(self) -> str:
        parts = [f"speed {'/'.join(f'{s:g}' for s in self.speeds)}"] if self.speeds else []
        if "reverb" in self.steps:
            step = self.steps["reverb"]
            parts.append(f"reverberation from {len(step.ir_files):,} impulse responses on {step.p:.0%} of clips")
        if "noise" in self.steps:
            step = self.steps["noise"]
            parts.append(f"noise from {len(step.sound_file_paths):,} files at {step.min_snr_db:g}-{step.max_snr_db:g} "
                         f"dB SNR on {step.p:.0%} of clips")
        return ", ".join(parts)


def build_augmenter(data_args, rate: int) -> Optional[Augmenter]:
    """The Augmenter the flags ask for (None when none is), logged in one line."""
    if not augmenting(data_args):
        return None
    augmenter = Augmenter(
        rate, speeds=data_args.speed_perturbation or (),
        noise_files=audio_files(data_args.noise_dir, "--noise_dir") if data_args.noise_dir else (),
        snr_db=data_args.noise_snr_db, noise_prob=data_args.noise_prob,
        rir_files=audio_files(data_args.rir_dir, "--rir_dir") if data_args.rir_dir else (),
        rir_prob=data_args.rir_prob,
    )
    logger.info(f"Augmentation (training clips only, as their batches are made): {augmenter.describe()}")
    rates = {read_header(f)[1] for f in (*augmenter.noise_files, *augmenter.rir_files)} - {rate}
    if rates:
        logger.info(f"Augmentation: noise or impulse responses at {sorted(rates)} Hz are resampled to {rate} Hz as "
                    "they are read (store them at the model's rate to save that work)")
    return augmenter
