# shellcheck shell=bash
# The seed README's results tables as named recipes, sourced by run.sh (one GPU) and run_dist.sh (torchrun).
# One recipe per table row; `./run.sh --list` shows them with the seed's figures, `./run.sh --print NAME` the command.
#
# Where the values come from. The seed README links each row's own run.sh on the hub; none of those files is
# reachable from here. Most rows' fine-tuned model cards are: the Trainer wrote the run's learning rate, per-device
# batch size, gradient accumulation, warm-up, epochs, eval batch size and fp16 into them, and the eval interval shows
# in their results tables. Those numbers come from the card; every other flag (save cadence, layerdrop, frozen
# feature encoder, checkpointing, chars_to_ignore, group_by_length, overwrite_output_dir, push_to_hub) is the seed's
# published single-GPU or 8-GPU command, chosen by the row's GPU count.
# A row without a reachable card says what it uses instead.

# The characters the seed's commands delete from transcripts (quoted: a bare ? would be a glob).
SEED_CHARS_TO_IGNORE=(',' '?' '.' '!' '-' ';' ':' '"' '“' '%' '‘' '”' '�')

# Every recipe, in the seed README's order (TIMIT, LibriSpeech, Common Voice, Multilingual LibriSpeech), then the
# published recipes of the newer model families.
RECIPES="timit-wav2vec2-base timit-unispeech-large-1500h-cv timit-sew-mid-100k timit-distilhubert
librispeech-100h-wavlm-large librispeech-100h-wavlm-base-plus librispeech-100h-wav2vec2-large-lv60
librispeech-100h-hubert-large-ll60k librispeech-100h-sew-mid-100k
common-voice-tr-xls-r-300m-phoneme common-voice-it-xls-r-300m-phoneme common-voice-sv-se-xls-r-300m-phoneme
common-voice-tr-xlsr-53 common-voice-tr-xlsr-53-dist common-voice-tr-xlsr-53-ft common-voice-tr-xls-r-300m
common-voice-tr-xls-r-1b mls-german-xlsr-53 mls-german-xls-r-300m
common-voice-mn-w2v-bert-2.0 common-voice-tr-mms-1b-all-adapter"

# load_recipe NAME: set the recipe's fields; returns 1 for an unknown name.
#   gpus result duration  GPUs of the published run, its figure, its training time and hardware
#   dataset config        hub dataset and configuration (the seed's names)
#   train_split eval_split              hub split names
#   local_train_split local_eval_split  the same splits in a local copy of the corpus (DATA_DIR)
#   audio text            column names
#   batch accum lr warmup epochs eval_steps  per-device batch, gradient accumulation, schedule, eval interval
#   model output          pretrained checkpoint; output directory (named after the seed's fine-tuned model)
#   extra                 further flags of this row (an array)
load_recipe() {
	gpus=1 config="" audio=audio text=text accum=1 eval_steps=100 extra=()
	case $1 in
	timit-*)
		# TIMIT (LDC93S1). Hub: timit_asr (needs the LDC download). Locally: split folders train/ and test/ with a
		# metadata.csv (file_name, text) each, or a save_to_disk copy; the raw TIMIT tree is not read as such.
		# All four cards: lr 1e-4, batch 32, warm-up 1000, 20 epochs, eval batch 1, eval every 100 steps.
		dataset=timit_asr train_split=train eval_split=test local_train_split=train local_eval_split=test
		batch=32 lr=1e-4 warmup=1000 epochs=20 extra=(--per_device_eval_batch_size=1)
		case $1 in
		timit-wav2vec2-base)  # card: patrickvonplaten/wav2vec2-base-timit-fine-tuned (WER 0.2151)
			model=facebook/wav2vec2-base result="WER 0.21" duration="32min, 1x TITAN RTX"
			output=./wav2vec2-base-timit-fine-tuned ;;
		timit-unispeech-large-1500h-cv)  # card: patrickvonplaten/unispeech-large-1500h-cv-timit (WER 0.2196)
			model=microsoft/unispeech-large-1500h-cv result="WER 0.22" duration="35min, 1x TITAN RTX"
			output=./unispeech-large-1500h-cv-timit ;;
		timit-sew-mid-100k)  # the row names asapp/sew-mid-100k but links patrickvonplaten/sew-small-100k-timit, a
			# card fine-tuned from asapp/sew-small-100k (WER 0.2988); we follow the table's model, the card's numbers.
			model=asapp/sew-mid-100k result="WER 0.30" duration="28min, 1x TITAN RTX"
			output=./sew-mid-100k-timit ;;
		timit-distilhubert)  # card: patrickvonplaten/distilhubert-timit (WER 0.6776)
			model=ntu-spml/distilhubert result="WER 0.68" duration="26min, 1x TITAN RTX"
			output=./distilhubert-timit ;;
		*) return 1 ;;
		esac ;;
	librispeech-100h-*)
		# LibriSpeech clean, 100 h. Hub: librispeech_asr "clean", train.100 / validation (the seed's 8-GPU LibriSpeech
		# command). Locally: the LibriSpeech tree, where these are train-clean-100 and dev-clean.
		dataset=librispeech_asr config=clean train_split=train.100 eval_split=validation
		local_train_split=train-clean-100 local_eval_split=dev-clean gpus=8 lr=3e-4 warmup=500 epochs=3 batch=4
		case $1 in
		librispeech-100h-wavlm-large)  # card: patrickvonplaten/wavlm-libri-clean-100h-large (WER 0.0491)
			model=microsoft/wavlm-large result="WER 0.049" duration="1h30, 8x V100"
			batch=2 accum=2 eval_steps=300 extra=(--per_device_eval_batch_size=2)
			output=./wavlm-libri-clean-100h-large ;;
		librispeech-100h-wavlm-base-plus)  # its card is not reachable: the numbers of its sibling run's card,
			# patrickvonplaten/wavlm-libri-clean-100h-base (same series, from microsoft/wavlm-base, WER 0.0675).
			model=microsoft/wavlm-base-plus result="WER 0.068" duration="1h30, 8x V100"
			eval_steps=300 extra=(--per_device_eval_batch_size=4)
			output=./wavlm-libri-clean-100h-base-plus ;;
		librispeech-100h-wav2vec2-large-lv60)  # card: patrickvonplaten/wav2vec2-librispeech-clean-100h-demo-dist
			# (WER 0.0417); the row appears twice in the seed's table.
			model=facebook/wav2vec2-large-lv60 result="WER 0.042" duration="1h30, 8x V100"
			output=./wav2vec2-librispeech-clean-100h-demo-dist ;;
		librispeech-100h-hubert-large-ll60k)  # card: patrickvonplaten/hubert-librispeech-clean-100h-demo-dist (0.0883)
			model=facebook/hubert-large-ll60k result="WER 0.088" duration="1h30, 8x V100"
			output=./hubert-librispeech-clean-100h-demo-dist ;;
		librispeech-100h-sew-mid-100k)  # card: patrickvonplaten/sew-mid-100k-librispeech-clean-100h-ft (WER 0.1665)
			model=asapp/sew-mid-100k result="WER 0.167" duration="54min, 8x V100" lr=3e-5
			output=./sew-mid-100k-librispeech-clean-100h-ft ;;
		*) return 1 ;;
		esac ;;
	common-voice-*)
		# Common Voice. Hub: common_voice (phoneme rows: mozilla-foundation/common_voice_3_0), train+validation / test,
		# text in `sentence`. Common Voice has left the hub: pass a release folder (clips/ plus train.tsv, dev.tsv,
		# test.tsv), where the same split names work (validation = dev.tsv).
		dataset=common_voice config=tr train_split=train+validation eval_split=test
		local_train_split=train+validation local_eval_split=test
		text=sentence model=facebook/wav2vec2-xls-r-300m
		case $1 in
		common-voice-*-phoneme)
			# Phoneme rows: need phoneme mode (transcripts turned into espeak phonemes, scored as PER; the seed's
			# PER is its WER over space-separated phonemes). Card (tr only; it and sv-SE are not
			# reachable and take the same values): patrickvonplaten/xls-r-300m-tr-phoneme (0.09936): lr 7.5e-5,
			# batch 4 x 8 GPUs, warm-up 500, 150 epochs, eval batch 4; eval interval not shown, the seed's 100.
			dataset=mozilla-foundation/common_voice_3_0 gpus=8 batch=4 lr=7.5e-5 warmup=500 epochs=150
			duration="23min, 8x V100"
			case $1 in
			common-voice-tr-xls-r-300m-phoneme) result="PER 0.099" phoneme=tr ;;
			common-voice-it-xls-r-300m-phoneme) result="PER 0.077" phoneme=it config=it ;;
			common-voice-sv-se-xls-r-300m-phoneme) result="PER 0.099" phoneme=sv config=sv-SE ;;  # espeak: sv
			*) return 1 ;;
			esac
			output=./xls-r-300m-${phoneme}-phoneme
			extra=(--phoneme_language="$phoneme" --per_device_eval_batch_size=4) ;;
		common-voice-tr-xlsr-53)  # the seed's single-GPU command (run.sh's default); the card agrees.
			model=facebook/wav2vec2-large-xlsr-53 result="WER 0.35" duration="1h20, 1x V100"
			batch=16 accum=2 lr=3e-4 warmup=500 epochs=15 output=./wav2vec2-common_voice-tr-demo ;;
		common-voice-tr-xlsr-53-dist)  # the seed's 8-GPU command (run_dist.sh's default); card:
			# patrickvonplaten/wav2vec2-common_voice-tr-demo-dist (WER 0.3581).
			model=facebook/wav2vec2-large-xlsr-53 result="WER 0.36" duration="18min, 8x V100"
			gpus=8 batch=4 lr=3e-4 warmup=500 epochs=15 output=./wav2vec2-common_voice-tr-demo-dist ;;
		common-voice-tr-xlsr-53-ft)  # neither its run.sh nor its card is reachable: the numbers of the xls-r-300m
			# row's card (same 300M-parameter size, same 8 V100s, same 1h05 and WER 0.31).
			model=facebook/wav2vec2-large-xlsr-53 result="WER 0.31" duration="1h05, 8x V100"
			gpus=8 batch=8 lr=5e-4 warmup=500 epochs=100 eval_steps=500 extra=(--eval_metrics wer cer)
			output=./wav2vec2-large-xlsr-53-common_voice-tr-ft ;;
		common-voice-tr-xls-r-300m)  # card: patrickvonplaten/wav2vec2-large-xls-r-300m-common_voice-tr-ft (WER 0.3071)
			result="WER 0.31" duration="1h05, 8x V100"
			gpus=8 batch=8 lr=5e-4 warmup=500 epochs=100 eval_steps=500 extra=(--eval_metrics wer cer)
			output=./wav2vec2-large-xls-r-300m-common_voice-tr-ft ;;
		common-voice-mn-w2v-bert-2.0)
			# Not a seed row: the published Wav2Vec2-BERT recipe, "Fine-Tune W2V2-Bert for low-resource ASR with
			# Transformers" (Hugging Face blog, 2024-01-19, https://huggingface.co/blog/fine-tune-w2v2-bert), Common
			# Voice 16.0 Mongolian: lr 5e-5, batch 16 x 2 accumulation, warm-up 500, 10 epochs, eval every 300 steps,
			# save every 600 (2 kept), fp16, checkpointing, a convolutional adapter, no dropout, layerdrop or
			# SpecAugment, mean-reduced loss; WER 0.324 at step 1,200 on its test split. Its text clean-up is a
			# character list plus the deletion of Latin letters, which is the same as listing them.
			dataset=mozilla-foundation/common_voice_16_0 config=mn model=facebook/w2v-bert-2.0
			result="WER 0.32" duration="1200 steps, 1 GPU"
			batch=16 accum=2 lr=5e-5 warmup=500 epochs=10 eval_steps=300 output=./w2v-bert-2.0-mongolian-colab-CV16.0
			extra=(--add_adapter=True --attention_dropout=0.0 --hidden_dropout=0.0 --feat_proj_dropout=0.0
				--mask_time_prob=0.0 --layerdrop=0.0 --ctc_loss_reduction=mean --logging_steps=300 --save_steps=600
				--save_total_limit=2 --chars_to_ignore "${SEED_CHARS_TO_IGNORE[@]}" "'" '»' '«' {a..z} {A..Z}) ;;
		common-voice-tr-mms-1b-all-adapter)
			# Not a seed row: the published MMS adapter recipe, "Fine-tuning MMS Adapter Models for Multi-Lingual ASR"
			# (Hugging Face blog, 2023-06-19, https://huggingface.co/blog/mms_adapters), Common Voice 6.1 Turkish:
			# facebook/mms-1b-all with a new "tur" adapter (the 1B base frozen, about 2.5M parameters trained), lr 1e-3,
			# batch 32, warm-up 100, 4 epochs, eval every 100 steps, save every 200 (2 kept), fp16, checkpointing,
			# length grouping. The post reports its WER in its notebook; the figure is not restated here.
			dataset=mozilla-foundation/common_voice_6_1 config=tr model=facebook/mms-1b-all
			result="WER n/a" duration="10-20 min, 1 GPU (the blog; its WER is in its notebook)"
			batch=32 lr=1e-3 warmup=100 epochs=4 eval_steps=100 output=./wav2vec2-mms-1b-all-adapter-tur
			extra=(--target_language=tur --adapter_attn_dim=16 --save_steps=200 --save_total_limit=2
				--chars_to_ignore "${SEED_CHARS_TO_IGNORE[@]}") ;;
		common-voice-tr-xls-r-1b)  # neither its run.sh nor its card is reachable: the seed's 8-GPU command values
			# on the row's 2 GPUs (the published 15h10 suggests a longer schedule than these 15 epochs).
			model=facebook/wav2vec2-xls-r-1b result="WER 0.21" duration="15h10, 2x Titan 24GB"
			gpus=2 batch=4 lr=3e-4 warmup=500 epochs=15 output=./wav2vec2-xls-r-1b-common_voice-tr-ft ;;
		*) return 1 ;;
		esac ;;
	mls-german-*)
		# Multilingual LibriSpeech, German, 10 h of supervision. Hub: multilingual_librispeech "german", the
		# 9_hours split (the cards' 69 steps of 32 per epoch) against test. Locally: split folders 9_hours/ and
		# test/ with a metadata.csv each, or a save_to_disk copy; the MLS release tree is not read as such.
		# Both cards: lr 1e-4, batch 32, warm-up 1000, 200 epochs, eval every 500 steps, 1 GPU.
		dataset=multilingual_librispeech config=german train_split=9_hours eval_split=test
		local_train_split=9_hours local_eval_split=test
		batch=32 lr=1e-4 warmup=1000 epochs=200 eval_steps=500 duration="15h04, 1x Titan 24GB"
		case $1 in
		mls-german-xlsr-53)  # card: patrickvonplaten/wav2vec2-xlsr-53-300m-mls-german-ft (WER 0.1288)
			model=facebook/wav2vec2-large-xlsr-53 result="WER 0.13" output=./wav2vec2-xlsr-53-300m-mls-german-ft ;;
		mls-german-xls-r-300m)  # card: patrickvonplaten/wav2vec2-300m-mls-german-ft (WER 0.1520)
			model=facebook/wav2vec2-xls-r-300m result="WER 0.15" output=./wav2vec2-300m-mls-german-ft ;;
		*) return 1 ;;
		esac ;;
	*) return 1 ;;
	esac
}

# select_recipe DEFAULT ARGS...: read an optional --list / --print and recipe name off the command line.
# Sets RECIPE, ACTION (run, print or list) and PASS_THROUGH (the arguments left for the script).
select_recipe() {
	RECIPE=$1 ACTION=run
	shift
	case ${1:-} in
	--list) ACTION=list; return 0 ;;
	--print) ACTION=print; shift ;;
	esac
	if [ $# -gt 0 ] && [[ $1 != --* ]]; then
		RECIPE=$1
		shift
	fi
	PASS_THROUGH=("$@")
	if ! load_recipe "$RECIPE"; then
		echo "error: unknown recipe '$RECIPE'; ./run.sh --list shows them all." >&2
		exit 2
	fi
}

# list_recipes DEFAULT: one line per recipe with the seed's figure, GPUs and training time.
list_recipes() {
	local name
	printf '%-40s %-10s %-5s %s\n' recipe "seed" GPUs "seed's training time"
	for name in $RECIPES; do
		load_recipe "$name"
		printf '%-40s %-10s %-5s %s%s\n' "$name" "$result" "$gpus" "$duration" "$([ "$name" = "$1" ] && echo '   (default)')"
	done
}

# absolute_data_dirs: make DATA_DIR (and a DATASET that is a directory) absolute, before the scripts cd.
absolute_data_dirs() {
	if [ -n "${DATA_DIR:-}" ]; then
		[ -d "$DATA_DIR" ] || { echo "error: DATA_DIR=$DATA_DIR is not a directory." >&2; exit 2; }
		DATA_DIR=$(cd "$DATA_DIR" && pwd)
	fi
	if [ -n "${DATASET:-}" ] && [ -d "$DATASET" ]; then
		DATASET=$(cd "$DATASET" && pwd)
	fi
}

# recipe_args: the script's arguments for the loaded recipe into ARGS. The environment's DATASET, CONFIG, MODEL and
# OUTPUT_DIR override the recipe's; DATA_DIR (or a DATASET that is a directory) switches to the local split names.
recipe_args() {
	DATASET=${DATASET:-${DATA_DIR:-$dataset}}
	CONFIG=${CONFIG:-$config}
	MODEL=${MODEL:-$model}
	OUTPUT_DIR=${OUTPUT_DIR:-$output}
	if [ -d "$DATASET" ]; then
		train_split=$local_train_split eval_split=$local_eval_split
	fi
	ARGS=(--dataset_name="$DATASET" --model_name_or_path="$MODEL")
	[ -z "$CONFIG" ] || ARGS+=(--dataset_config_name="$CONFIG")
	ARGS+=(
		--train_split_name="$train_split" --eval_split_name="$eval_split"
		--audio_column_name="$audio" --text_column_name="$text"
		--output_dir="$OUTPUT_DIR" --overwrite_output_dir
		--num_train_epochs="$epochs" --per_device_train_batch_size="$batch" --gradient_accumulation_steps="$accum"
		--learning_rate="$lr" --warmup_steps="$warmup"
		--eval_strategy=steps --eval_steps="$eval_steps" --save_steps=400 --save_total_limit=3
	)
	[ "$gpus" -eq 1 ] || ARGS+=(--logging_steps=1)  # the seed's 8-GPU command logs every step
	ARGS+=(
		--layerdrop=0.0 --freeze_feature_encoder --gradient_checkpointing
		--chars_to_ignore "${SEED_CHARS_TO_IGNORE[@]}"
		--fp16 --group_by_length --push_to_hub --do_train --do_eval
	)
	ARGS+=(${extra[@]+"${extra[@]}"})
}

# Flags of a recipe that say what data it reads, which model it starts from and where the result goes: named first
# when another corpus takes the recipe's place (dataset_note); its other flags are training settings.
DATA_AND_OUTPUT_FLAGS=" dataset_config_name train_split_name eval_split_name audio_column_name text_column_name
phoneme_language target_language model_name_or_path output_dir overwrite_output_dir push_to_hub "

# dataset_note: on stderr, when DATASET or DATA_DIR replaces the recipe's corpus, the recipe's settings that the run
# keeps (those the caller set neither in the environment nor as arguments) and how to change them.
dataset_note() {
	[ "$DATASET" != "$dataset" ] || return 0
	local given=" " word name values=() data=() training=() setting
	for word in ${PASS_THROUGH[@]+"${PASS_THROUGH[@]}"}; do
		[[ $word != --* ]] || { word=${word#--}; given+="${word%%=*} "; }
	done
	[ "$CONFIG" = "$config" ] || given+="dataset_config_name "
	[ "$MODEL" = "$model" ] || given+="model_name_or_path "
	[ "$OUTPUT_DIR" = "$output" ] || given+="output_dir "
	# ARGS holds --flag=value, --flag, and --flag value value ... (chars_to_ignore); "--" ends the walk.
	for word in "${ARGS[@]}" --; do
		if [[ $word == --* ]]; then
			if [ -n "${name:-}" ] && [[ $given != *" $name "* ]] && [ "$name" != dataset_name ]; then
				setting="--$name"
				if [ ${#values[@]} -gt 3 ]; then
					setting+=" (${#values[@]} values)"
				elif [ ${#values[@]} -gt 0 ]; then
					setting+=" ${values[*]}"
				fi
				if [[ $DATA_AND_OUTPUT_FLAGS == *[[:space:]]"$name"[[:space:]]* ]]; then
					data+=("$setting")
				else
					training+=("$setting")
				fi
			fi
			name=${word#--} values=()
			[[ $name != *=* ]] || { values=("${name#*=}"); name=${name%%=*}; }
		else
			values+=("$word")
		fi
	done
	local script
	script=./$(basename "$0")
	echo "note: $script runs recipe $RECIPE on $DATASET with the recipe's ${data[*]:-data settings left to the script}" >&2
	echo "note: and its training settings ${training[*]:-(none)}. Extra arguments override any of these (later ones" \
		"win), e.g. $script $RECIPE --push_to_hub False; $script --list shows the recipes." >&2
}

# batch_note WORLD: on stderr, how to keep the published global batch when WORLD processes replace its GPUs.
batch_note() {
	local world=$1
	[ "$world" -ne "$gpus" ] || return 0
	local total=$((gpus * batch * accum))
	if [ $((gpus * accum % world)) -eq 0 ]; then
		echo "note: $RECIPE was published on $gpus GPU(s), global batch $total; on $world add" \
			"--gradient_accumulation_steps $((gpus * accum / world)) to keep it." >&2
	else
		echo "note: $RECIPE was published on $gpus GPU(s), global batch $total; on $world it is" \
			"$((world * batch * accum)) unless you change the batch size or gradient accumulation." >&2
	fi
}

# shell_quote WORD: WORD as the shell reads it back (single quotes unless it is plain).
shell_quote() {
	case $1 in
	'' | *[!A-Za-z0-9_./:=+,@%-]*) printf "'%s'" "${1//\'/\'\\\'\'}" ;;
	*) printf '%s' "$1" ;;
	esac
}

# print_command WORDS...: the command, with each of the script's flags (and its values) on its own line.
print_command() {
	local word line="" script_seen=""
	for word in "$@"; do
		if [ -n "$script_seen" ] && [[ $word == --* ]]; then
			printf '%s \\\n' "$line"
			line="   "
		fi
		line+="${line:+ }$(shell_quote "$word")"
		[[ $word != *run_speech_recognition_ctc.py ]] || script_seen=1
	done
	printf '%s\n' "$line"
}

# run_or_print WORDS...: run the command, or print it for --print.
run_or_print() {
	if [ "$ACTION" = print ]; then
		print_command "$@"
	else
		exec "$@"
	fi
}
