#!/usr/bin/env python
# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Serve a CTC model saved by run_speech_recognition_ctc.py (or a checkpoint) behind OpenAI's audio transcription
API, so that any OpenAI client transcribes with it.

    python serve.py out                                           # http://127.0.0.1:8000/v1/audio/transcriptions
    python serve.py out --host 0.0.0.0 --port 8080 --api_key KEY  # reachable from other machines, with a key
    python serve.py out --onnx int8 --max_batch_seconds 20        # the int8 ONNX export (export_onnx.py --int8)
    python serve.py out --device cuda --lm --beam_width 50        # on a GPU, beam search with the saved n-gram LM

    curl http://127.0.0.1:8000/v1/audio/transcriptions -F file=@interview.mp3 -F model=out -F response_format=srt

The model answers to its folder's name (or --served_model_name). A file gets the same words as transcribe.py gives
it: the same engine runs, and windows of concurrent requests share forward passes (--max_batch_seconds of padded
audio, after waiting at most --max_wait_ms for company). Live streams go to the WebSocket /v1/realtime; a web page to
try the model is at http://127.0.0.1:8000/. Endpoints, messages, limits and errors: docs/serve.md.
"""

import os

# As in transcribe.py: windows come in many lengths, and oneDNN would keep a compiled kernel for each (1,024 by
# default), so memory would grow with every new length; a few suffice. Set before torch is imported.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8")

import argparse
import logging

from ctc_finetune.engine import Engine, EngineOptions, check_model_dir
from ctc_finetune.onnx_runtime import ONNX_FILES
from ctc_finetune.faults import run_command
from ctc_finetune.serving import ServeOptions, check_port, serve

logger = logging.getLogger("serve")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", help="Directory written by the training script, or one of its checkpoint-*.")
    parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (0.0.0.0: every interface).")
    parser.add_argument("--port", type=int, default=8000, help="Port to listen on (default 8000).")
    parser.add_argument("--onnx", nargs="?", const="fp32", choices=tuple(ONNX_FILES),
                        help="Run model_dir's ONNX export in onnxruntime on the CPU: fp32 (the default) or int8.")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto = cuda if available.")
    parser.add_argument("--served_model_name", help="The name requests give as `model` (default: model_dir's name).")
    parser.add_argument("--language", help="An MMS model's language (ISO 639-3): its adapter, the only one served.")
    parser.add_argument("--lm", action="store_true", help="Beam search with the n-gram LM saved in model_dir.")
    parser.add_argument("--beam_width", type=int, default=100,
                        help="Beams kept with --lm or a request's hotwords (default 100, as pyctcdecode).")
    parser.add_argument("--max_batch_seconds", type=float, default=60.0,
                        help="Padded audio per forward pass, across requests (default 60); 0: each window alone.")
    parser.add_argument("--max_wait_ms", type=float, default=5.0,
                        help="The longest a window waits for others to share its forward pass (default 5).")
    parser.add_argument("--max_upload_mb", type=float, default=25.0,
                        help="Largest upload in MiB (default 25, as OpenAI's API); larger ones get a 413.")
    parser.add_argument("--max_audio_seconds", type=float, default=3600.0,
                        help="Longest audio per request in seconds (default 3600); longer gets a 413.")
    parser.add_argument("--max_queue", type=int, default=64,
                        help="Requests in progress at once (default 64); one more gets a 503 with Retry-After.")
    parser.add_argument("--api_key", help="Ask every request but /health for `Authorization: Bearer API_KEY`.")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535 or args.beam_width < 1:
        parser.error(f"--port is 0 to 65535 and --beam_width >= 1; got {args.port} and {args.beam_width}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    # 1. Check everything that can fail before the model loads: the folder, the limits, the port
    check_model_dir(args.model_dir)
    name = args.served_model_name or os.path.basename(os.path.normpath(os.path.abspath(args.model_dir)))
    options = ServeOptions(name, args.language, args.max_batch_seconds, args.max_wait_ms, args.max_upload_mb,
                           args.max_audio_seconds, args.max_queue, args.api_key)
    check_port(args.host, args.port)
    # 2. Load the model, once
    engine = Engine(args.model_dir, EngineOptions(device=args.device, onnx=args.onnx, language=args.language,
                                                  lm=args.lm, beam_width=args.beam_width))
    # 3. Serve until Ctrl-C or SIGTERM
    logger.info(f"Serving {engine.describe()} as model {name!r} on http://{args.host}:{args.port}/v1")
    serve(engine, options, args.host, args.port)


def cli() -> None:
    run_command(main)


if __name__ == "__main__":
    cli()
