#!/usr/bin/env bash
# Several GPUs through torchrun. Runs a row of the seed README's results tables (recipes.sh) on the row's GPU count;
# with no recipe name, the seed's 8-GPU Common Voice Turkish command (~18 min on 8 V100s, WER 0.36).
#   ./run_dist.sh [NAME] [ARGS...]    extra arguments are passed through to the script (later ones win)
#   ./run_dist.sh --list              every recipe with the seed's figure, GPUs and training time
#   ./run_dist.sh --print [NAME] [ARGS...]   the exact command, not run
# NPROC_PER_NODE (default: the recipe's GPUs), NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT set up torchrun;
# DATASET, CONFIG, MODEL, OUTPUT_DIR and DATA_DIR work as in run.sh, e.g.
#   NPROC_PER_NODE=8 DATA_DIR=/data/LibriSpeech ./run_dist.sh librispeech-100h-wavlm-large
#   NPROC_PER_NODE=2 DATASET=/data/cv-corpus-tr ./run_dist.sh --max_steps 100
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/recipes.sh"
absolute_data_dirs  # relative paths are meant from the caller's directory
cd "$HERE"

select_recipe common-voice-tr-xlsr-53-dist "$@"
if [ "$ACTION" = list ]; then
	list_recipes common-voice-tr-xlsr-53-dist
	exit 0
fi
NPROC_PER_NODE=${NPROC_PER_NODE:-$gpus}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
recipe_args
dataset_note
batch_note $((NPROC_PER_NODE * NNODES))
run_or_print torchrun --nproc_per_node "$NPROC_PER_NODE" --nnodes "$NNODES" --node_rank "$NODE_RANK" \
	--master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
	run_speech_recognition_ctc.py "${ARGS[@]}" ${PASS_THROUGH[@]+"${PASS_THROUGH[@]}"}
