#!/usr/bin/env bash
# Fixed-seed runs of a checkout of the script, for checking that a refactoring changes no output:
#   bash tools/fixed_seed_runs.sh OLD_CHECKOUT /tmp/runs && mv /tmp/runs /tmp/old
#   bash tools/fixed_seed_runs.sh .            /tmp/runs
#   python tools/compare_outputs.py /tmp/old /tmp/runs        # "identical", or the files that differ
# Both runs write to the same OUT path (paths end up in some outputs) and read the same INPUTS (built by the first).
# FINETUNED (default outputs/demo, made by the demo) is a trained model for the evaluation-only runs, whose
# transcripts are then not empty.
set -euo pipefail
SRC=$(cd "$1" && pwd); OUT=$2; HERE=$(cd "$(dirname "$0")/.." && pwd)
FINETUNED=${FINETUNED:-$HERE/outputs/demo}
DATA=$HERE/tests/fixtures/commands
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 CUDA_VISIBLE_DEVICES=
rm -rf "$OUT"; mkdir -p "$OUT"
cut -d, -f2 "$DATA"/train/metadata.csv "$HERE"/examples/demo_corpus/*/metadata.csv | grep -v '^sentence$' > "$OUT/lm.txt"
COMMON="--dataset_name $DATA --eval_split_name validation --predict_split_name test --text_column_name sentence
  --eval_metrics wer cer --do_eval --do_predict --per_device_eval_batch_size 3 --report_to none --seed 42
  --dataloader_num_workers 0"
TRAIN="--config_name $HERE/examples/demo_model --train_split_name train --do_train --overwrite_output_dir
  --max_steps 12 --per_device_train_batch_size 4 --learning_rate 0.002 --warmup_steps 2 --logging_steps 2
  --save_strategy no --eval_strategy steps --eval_steps 6 --freeze_feature_encoder false"
EVAL="--model_name_or_path $FINETUNED --group_by_length --lm_text $OUT/lm.txt"
# The runs' inputs, built once and shared by both checkouts (a rebuilt tiny checkpoint does not come out bit for bit
# the same): tiny random checkpoints and the fixture corpus as tar shards. INPUTS (default OUT.inputs) keeps them.
INPUTS=${INPUTS:-$OUT.inputs}
if [ ! -d "$INPUTS" ]; then
  python - "$INPUTS/models" "$HERE/tests" <<'PY'
import sys
sys.path.insert(0, sys.argv[2])
from tiny_models import make_checkpoint, make_mms_checkpoint
make_checkpoint(f"{sys.argv[1]}/wav2vec2", "wav2vec2")
make_checkpoint(f"{sys.argv[1]}/parakeet", "parakeet_ctc")
make_mms_checkpoint(f"{sys.argv[1]}/mms")
PY
  python "$HERE/tools/make_shards.py" --dataset_name "$DATA" --splits train validation test \
    --text_column_name sentence --clips_per_shard 3 --output_dir "$INPUTS/shards" > /dev/null
fi
FEATURE="--train_split_name train --do_train --overwrite_output_dir --max_steps 6 --per_device_train_batch_size 4
  --learning_rate 0.002 --save_strategy no"
cd "$SRC"
run() { name=$1; shift; echo "run $name"; python run_speech_recognition_ctc.py $COMMON "$@" --output_dir "$OUT/$name" \
  --cache_dir "$OUT/cache_$name" > "$OUT/$name.log" 2>&1 || { tail -5 "$OUT/$name.log"; exit 1; }; }
run train_lm $TRAIN --group_by_length --lm_text train                  # train, evaluate during and after, LM, predict
run train_on_the_fly $TRAIN --preprocess_on_the_fly --max_batch_duration 20
run eval_lm $EVAL                                                       # a trained model: real transcripts, LM
run eval_lm_on_the_fly $EVAL --preprocess_on_the_fly
# The optional features, each on its own: tar shards, phonemes, an MMS adapter, a subword vocabulary on a newer family,
# LoRA, speed perturbation, and model selection with head-first training and the tri-stage schedule
run shards $FEATURE --model_name_or_path "$INPUTS/models/wav2vec2" --dataset_name "$INPUTS/shards" --text_column_name text
run phonemes $TRAIN --phoneme_language en-us
run adapter $FEATURE --model_name_or_path "$INPUTS/models/mms" --target_language tur
run bpe_parakeet $FEATURE --model_name_or_path "$INPUTS/models/parakeet" --vocab_type bpe --vocab_size 80
run lora $FEATURE --model_name_or_path "$INPUTS/models/wav2vec2" --lora_rank 4 --lora_learning_rate 0.01
run speed $TRAIN --speed_perturbation 0.9 1.0 1.1
run selection $TRAIN --save_strategy steps --save_steps 6 --average_checkpoints 2 --early_stopping_patience 3 \
  --metric_for_best_model cer --freeze_encoder_steps 2 --lr_scheduler_type tri_stage --report_clips 3
