# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""The parts of run_speech_recognition_ctc.py, one concept per module; the recipe's docstring maps them to its steps.

Import the modules themselves (`from ctc_finetune.audio import load_audio`): this file imports nothing, so that
transcribe.py, report.py and the tools load only what they use.
"""
