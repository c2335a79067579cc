#!/usr/bin/env python
# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Write report.html, one self-contained page of error analysis, for a run of run_speech_recognition_ctc.py.

    python report.py out                         # writes out/report.html and prints its path
    python report.py out --report_clips 100      # list the 100 worst clips of each split (default 50)
    python report.py out --report_embed_audio    # put the worst clips' audio inside the page (portable, bigger)

    from ctc_finetune.report import build_report; build_report("out")

It reads what the training script wrote in its output_dir: eval_predictions.csv (--do_eval) and/or predictions.csv
(--do_predict), and where present trainer_state.json, data_report.json, all_results.json and config.json. The page
shows the scores, the training curves and the data, then for each split: WER and CER by clip duration and by the
other columns of the predictions (speaker, accent, ...; a number such as a speaking rate in a few ranges), the most
frequent errors, and the worst clips with an audio player and the reference and hypothesis aligned word by word. It
opens offline in any browser: inline CSS and plots, no scripts. Players link to the audio by paths relative to
output_dir, so keep the corpus where it is (or embed the audio, which makes the page about 4/3 of the clips' size
bigger).
"""
import argparse
import logging

from ctc_finetune.analysis import ReportError
from ctc_finetune.faults import exit_on_user_error
from ctc_finetune.report import build_report


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", help="The output_dir of a run_speech_recognition_ctc.py run.")
    parser.add_argument("--report_clips", type=int, default=50,
                        help="How many worst clips of each split to list with a player and an alignment (default 50).")
    parser.add_argument("--report_embed_audio", action="store_true",
                        help="Put the listed clips' audio inside report.html instead of linking to the files.")
    args = parser.parse_args(argv)
    if args.report_clips < 0:
        parser.error(f"--report_clips must be 0 or more, got {args.report_clips}")
    logging.basicConfig(format="%(message)s", level=logging.INFO)
    try:
        path = build_report(args.output_dir, clips=args.report_clips, embed_audio=args.report_embed_audio)
    except ReportError as e:
        exit_on_user_error(e)
    print(path)  # the command's output, for scripts: the page's path
    return path


if __name__ == "__main__":
    main()
