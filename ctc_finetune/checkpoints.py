# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Checkpoints and output_dir at the start of a run (step 0): the checkpoint to resume from, files cut short,
and what a restart may find in output_dir."""

import glob
import json
import logging
import os
import re
import shutil
import zipfile
from typing import Optional

from .columns import DATA_REPORT_FILE, VOCAB_FILE
from .faults import UserError

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")  # the Trainer's checkpoint folders
# Files this script writes into output_dir before the first checkpoint: a restart may find them without that being
# "foreign content" (everything else in a non-empty output_dir makes us stop, as upstream).
OWN_OUTPUT_FILES = {
    VOCAB_FILE,
    DATA_REPORT_FILE,
    "tokenizer_config.json",
    "tokenizer.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "preprocessor_config.json",
    "processor_config.json",
    "config.json",
    "runs",
}


def safetensors_complete(path: str) -> bool:
    """Whether a .safetensors file is whole: its header parses and the file is as long as the header says."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        return os.path.getsize(path) == 8 + size + end
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def damaged_file(directory: str, checkpoint: bool = False) -> Optional[str]:
    """The first weights file in `directory` cut short (a kill mid-copy, a disk error), or None. In a Trainer
    checkpoint also the optimizer and scheduler states (torch.save writes a zip archive, whose index is at the end)."""
    for path in sorted(glob.glob(os.path.join(directory, "*.safetensors"))):
        if not safetensors_complete(path):
            return path
    for path in sorted(glob.glob(os.path.join(directory, "*.pt"))) if checkpoint else []:
        if not zipfile.is_zipfile(path):
            return path
    return None


def last_complete_checkpoint(out: str, remove_incomplete: bool) -> Optional[str]:
    """The newest usable checkpoint-N: it holds trainer_state.json (the Trainer writes it last; folders without it
    are removed) and no file cut short (such a checkpoint is skipped, with a log line, and kept for inspection)."""
    found = [(int(m[1]), os.path.join(out, m[0])) for m in map(CHECKPOINT_DIR.match, os.listdir(out))
             if m and os.path.isdir(os.path.join(out, m[0]))]
    for _, path in sorted(found, reverse=True):
        if not os.path.isfile(os.path.join(path, "trainer_state.json")):
            if remove_incomplete:  # the process died while writing it: unusable
                logger.warning(f"Removing {path}: an incomplete checkpoint (no trainer_state.json)")
                shutil.rmtree(path)
            continue
        damaged = damaged_file(path, checkpoint=True)
        if damaged is None:
            return path
        logger.warning(f"{damaged} is truncated or corrupt: {path} is skipped; falling back to an earlier checkpoint")
    return None


def resume_or_clear_output_dir(training_args) -> Optional[str]:
    """The checkpoint to resume from (None for a fresh start). With --overwrite_output_dir, first deletes output_dir's
    checkpoints (its vocabulary is the vocabulary step's: vocabulary.clear_vocabulary); refuses an output_dir holding
    other files and no checkpoint."""
    out = training_args.output_dir
    if not os.path.isdir(out) or not training_args.do_train:
        return None
    with training_args.main_process_first(desc="checking output_dir"):  # only the main process deletes
        if training_args.overwrite_output_dir:
            for name in os.listdir(out) if training_args.should_save else []:
                if CHECKPOINT_DIR.match(name):
                    path = os.path.join(out, name)
                    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            return None
        last = last_complete_checkpoint(out, remove_incomplete=training_args.should_save)
    if last is not None:
        logger.info(f"Resuming from {last} (pass --overwrite_output_dir to start afresh)")
        return last
    foreign = sorted(set(os.listdir(out)) - OWN_OUTPUT_FILES)
    if foreign:
        raise UserError(
            f"output_dir {out} is not empty ({', '.join(foreign[:3])}...) and holds no checkpoint; "
            "pass --overwrite_output_dir to reuse it or choose another --output_dir."
        )
    return None
