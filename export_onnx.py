#!/usr/bin/env python
# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Export a CTC model saved by run_speech_recognition_ctc.py (or one of its checkpoints) to ONNX, and check it.

    python export_onnx.py out                      # out/model.onnx
    python export_onnx.py out --int8               # and out/model.int8.onnx (MatMul/Gemm weights in int8)
    python export_onnx.py out/checkpoint-500 --int8 --clips data/test/
    python transcribe.py out recordings/ --onnx int8

The graph takes what the feature extractor makes (normalised waveform or filterbank features, and the mask) with
dynamic batch and time axes, and gives the logits; feature extraction stays in Python. The check runs at once: on a
few clips (--clips, default the repository's fixture test clips) it prints each file's size, the largest logit
difference against PyTorch and how far the greedy transcripts agree. A graph that disagrees beyond the tolerance
is deleted, with one `error:` line. The figures go to onnx_check.json beside the model.
"""

import argparse
import json
import logging
import os
import time

import jiwer
import numpy as np
import torch

from ctc_finetune.audio import AUDIO_ERRORS, load_audio
from ctc_finetune.export import INT8_OPS, export_onnx, file_bytes, model_batch, quantize_int8, remove_onnx
from ctc_finetune.families import blank_token_id, ctc_decode
from ctc_finetune.engine import load_model
from ctc_finetune.faults import UserError, run_command
from ctc_finetune.onnx_runtime import INT8_FILE, ONNX_FILE, OnnxSession, require_onnx
from ctc_finetune.sources import find_audio

logger = logging.getLogger("export_onnx")

FIXTURE_CLIPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tests", "fixtures", "commands", "test")
CHECK_FILE = "onnx_check.json"
MAX_CHECK_SECONDS = 30.0  # a longer clip is checked on its first 30 s


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", help="Directory written by the training script, or one of its checkpoint-*.")
    parser.add_argument("--int8", action="store_true", help=f"Also write {INT8_FILE} (dynamic int8 quantization).")
    parser.add_argument("--int8_ops", nargs="+", default=list(INT8_OPS), choices=("MatMul", "Gemm", "Conv"),
                        metavar="OP",
                        help=f"ONNX operators --int8 quantizes (default {' '.join(INT8_OPS)}); Conv too speeds up "
                             "models with a convolutional front end (wav2vec2-era), calibrated on --clips.")
    parser.add_argument("--clips", nargs="+", default=[FIXTURE_CLIPS], metavar="AUDIO",
                        help="Audio files, directories or manifests to check on (default: the fixture test clips).")
    parser.add_argument("--max_clips", type=int, default=20, help="Check on at most this many clips (default 20).")
    parser.add_argument("--tolerance", type=float, default=1e-3,
                        help="Largest fp32 logit difference allowed, relative to the largest logit (default 1e-3).")
    parser.add_argument("--int8_tolerance", type=float, default=0.05,
                        help="Largest character error rate of the int8 transcripts against PyTorch's (default 0.05).")
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.model_dir, "config.json")):
        raise UserError(f"{args.model_dir} is not a model directory (no config.json); pass a training output or one "
                        "of its checkpoint-* folders.")
    if args.max_clips < 1 or args.tolerance < 0 or args.int8_tolerance < 0:
        parser.error("--max_clips must be >= 1 and the tolerances >= 0")
    return args


def check_clips(inputs: list[str], feature_extractor, max_clips: int) -> list[tuple[str, np.ndarray]]:
    """Up to `max_clips` readable clips (each cut to MAX_CHECK_SECONDS), with their paths."""
    rate = feature_extractor.sampling_rate
    clips = []
    for path in find_audio(inputs):
        try:
            clips.append((path, load_audio(path, rate)[: round(MAX_CHECK_SECONDS * rate)]))
        except AUDIO_ERRORS as e:
            logger.warning(f"warning: skipped {path} in the check: undecodable audio ({e})")
        if len(clips) == max_clips:
            break
    if not clips:
        raise UserError(f"none of --clips {' '.join(inputs)} could be decoded; pass audio to check the export on.")
    return clips


def compare(model, sessions: dict, clips, feature_extractor, tokenizer) -> dict:
    """Per precision: the largest logit difference against PyTorch (absolute, and relative to the largest logit),
    the share of clips whose greedy transcripts are identical, and the CER of the transcripts against PyTorch's."""
    blank = blank_token_id(model.config, tokenizer)
    texts = {"pytorch": []} | {p: [] for p in sessions}
    diffs, peak = {p: 0.0 for p in sessions}, 1.0
    for _, audio in clips:  # one clip a batch: no padding to tell apart from a disagreement
        batch = model_batch(feature_extractor, [audio])
        with torch.no_grad():
            expected = model(**batch).logits.float().numpy()
        peak = max(peak, float(np.abs(expected).max()))
        texts["pytorch"].append(ctc_decode(tokenizer, expected[0].argmax(-1), blank))
        for precision, session in sessions.items():
            got = session.run(batch)
            diffs[precision] = max(diffs[precision], float(np.abs(got - expected).max()))
            texts[precision].append(ctc_decode(tokenizer, got[0].argmax(-1), blank))
    reference = " ".join(texts["pytorch"])
    results = {}
    for precision in sessions:
        hypothesis = " ".join(texts[precision])
        cer = jiwer.cer(reference, hypothesis) if reference.strip() else float(bool(hypothesis.strip()))
        same = sum(a == b for a, b in zip(texts["pytorch"], texts[precision]))
        results[precision] = {"max_logit_diff": diffs[precision], "relative_logit_diff": diffs[precision] / peak,
                              "transcripts_identical": same / len(clips), "cer_against_pytorch": cer}
    return results


def main(argv=None) -> dict:
    args = parse_args(argv)
    require_onnx()
    # 1. Load the model (PyTorch, on the CPU) and the clips to check on
    model, feature_extractor, tokenizer = load_model(args.model_dir, torch.device("cpu"))
    clips = check_clips(args.clips, feature_extractor, args.max_clips)
    # 2. Export, then quantize
    paths = {"fp32": os.path.join(args.model_dir, ONNX_FILE)}
    start = time.perf_counter()
    exporter = export_onnx(model, feature_extractor, paths["fp32"])
    logger.info(f"Exported {model.config.model_type} to {paths['fp32']} with the {exporter} exporter in "
                f"{time.perf_counter() - start:.1f} s")
    if args.int8:
        paths["int8"] = os.path.join(args.model_dir, INT8_FILE)
        calibration = [model_batch(feature_extractor, [audio]) for _, audio in clips]
        quantize_int8(paths["fp32"], paths["int8"], args.int8_ops, calibration)
        logger.info(f"Quantized the weights of {', '.join(args.int8_ops)} to int8: {paths['int8']}")
    # 3. Check against PyTorch
    sessions = {precision: OnnxSession(path) for precision, path in paths.items()}
    results = compare(model, sessions, clips, feature_extractor, tokenizer)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    logger.info(f"Checked on {len(clips)} clip(s) against PyTorch ({weights / 2**20:,.1f} MiB of fp32 weights):")
    for precision, r in results.items():
        r["bytes"] = file_bytes(paths[precision])
        logger.info(f"  {os.path.basename(paths[precision]):16} {r['bytes'] / 2**20:8,.1f} MiB   largest logit "
                    f"difference {r['max_logit_diff']:.2e} ({r['relative_logit_diff']:.1e} of the largest logit)   "
                    f"transcripts identical {r['transcripts_identical']:.0%}, CER against PyTorch "
                    f"{r['cer_against_pytorch']:.4f}")
    summary = {"model_type": model.config.model_type, "exporter": exporter, "clips": len(clips),
               "pytorch_weight_bytes": weights, "int8_ops": args.int8_ops if args.int8 else None, **results}
    with open(os.path.join(args.model_dir, CHECK_FILE), "w") as f:
        json.dump(summary, f, indent=2)
    # 4. Fail when an export disagrees beyond the tolerance (its file is deleted: nothing wrong is left to run)
    reject_disagreeing(results, paths, args)
    return summary


def reject_disagreeing(results: dict, paths: dict, args) -> None:
    """Delete each export that disagrees with PyTorch beyond its tolerance, and say why in one error."""
    bad = []
    if results["fp32"]["relative_logit_diff"] > args.tolerance:
        bad.append(("fp32", f"largest logit difference {results['fp32']['relative_logit_diff']:.1e} of the largest "
                            f"logit > --tolerance {args.tolerance:g}"))
    if "int8" in results and results["int8"]["cer_against_pytorch"] > args.int8_tolerance:
        bad.append(("int8", f"its transcripts' CER against PyTorch {results['int8']['cer_against_pytorch']:.4f} > "
                            f"--int8_tolerance {args.int8_tolerance:g}; try --int8_ops MatMul"))
    for precision, _ in bad:
        remove_onnx(paths[precision])
    if bad:
        raise UserError("; ".join(f"{os.path.basename(paths[p])} disagrees with PyTorch ({why}), deleted"
                                  for p, why in bad) + ".")


if __name__ == "__main__":
    run_command(main)
