#!/usr/bin/env bash
# One GPU. Runs a row of the seed README's results tables (recipes.sh); with no recipe name, the seed's single-GPU
# Common Voice Turkish command (XLSR-53, ~1h20 on a V100, WER 0.35).
#   ./run.sh [NAME] [ARGS...]    extra arguments are passed through to the script (later ones win)
#   ./run.sh --list              every recipe with the seed's figure, GPUs and training time
#   ./run.sh --print [NAME] [ARGS...]   the exact command, not run
# DATASET, CONFIG, MODEL and OUTPUT_DIR override the recipe's; DATA_DIR=/path uses a local copy of the corpus (the
# recipe's comment in recipes.sh names its local split names); with another corpus, a note on stderr lists the recipe's
# settings the run keeps (column names, splits, model, --push_to_hub, hyper-parameters), e.g.
#   DATA_DIR=/data/LibriSpeech ./run.sh librispeech-100h-wav2vec2-large-lv60 --gradient_accumulation_steps 8
#   DATASET=/data/cv-corpus-tr MODEL=facebook/wav2vec2-xls-r-300m ./run.sh --num_train_epochs 30
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/recipes.sh"
absolute_data_dirs  # relative paths are meant from the caller's directory
cd "$HERE"

select_recipe common-voice-tr-xlsr-53 "$@"
if [ "$ACTION" = list ]; then
	list_recipes common-voice-tr-xlsr-53
	exit 0
fi
recipe_args
dataset_note
batch_note 1
run_or_print python run_speech_recognition_ctc.py "${ARGS[@]}" ${PASS_THROUGH[@]+"${PASS_THROUGH[@]}"}
