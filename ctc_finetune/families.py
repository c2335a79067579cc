# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Model families: what differs between the CTC models of transformers, in one place (steps 3 to 8).

wav2vec2-era models (wav2vec2, HuBERT, WavLM, UniSpeech(-SAT), SEW(-D), Data2Vec-Audio, Wav2Vec2-Conformer) read the
waveform and keep every setting in their config; Wav2Vec2-BERT reads fbank features; Parakeet, LASR, OmniASR and
Granite Speech keep their encoder's settings in a sub-config and call their projection `ctc_head`. Everything else
goes through the tables and helpers here: lengths in samples, labels, inputs and ids are the same for every family."""

import itertools

import numpy as np
import torch
import transformers
from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2PhonemeCTCTokenizer

from .columns import LABEL_PAD_ID, WAVEFORM_INPUT
from .faults import UserError

TORCHAUDIO_INSTALL = "bash tools/install_extras.sh granite"  # torchaudio's pure-Python parts, for Granite Speech
# Our regularisation and CTC flags, with upstream's defaults: wav2vec2-era configs get these when a flag is unset.
UPSTREAM_MODEL_DEFAULTS = {
    "attention_dropout": 0.0, "activation_dropout": 0.0, "feat_proj_dropout": 0.0, "hidden_dropout": 0.0,
    "final_dropout": 0.0, "mask_time_prob": 0.05, "mask_time_length": 10, "mask_feature_prob": 0.0,
    "mask_feature_length": 10, "layerdrop": 0.0, "ctc_zero_infinity": False,
}
CONFIG_KEY_ALIASES = {"hidden_dropout": ("hidden_dropout", "dropout")}  # Parakeet and LASR call it `dropout`
# Feature frames a feature extractor makes of n samples (the frames it marks valid); waveform models read samples.
FEATURE_FRAMES = {
    # Wav2Vec2-BERT: 25 ms Kaldi fbank windows every 10 ms, stacked in pairs
    "SeamlessM4TFeatureExtractor": lambda fe, n: np.maximum((n - 400) // 160 + 1, 0) // fe.stride,
    # Parakeet: a centred STFT whose last, partial frame is masked
    "ParakeetFeatureExtractor": lambda fe, n: (n + fe.n_fft // 2 * 2 - fe.n_fft) // fe.hop_length,
    # LASR: the windows that fit inside the clip
    "LasrFeatureExtractor": lambda fe, n: np.maximum((n - fe.win_length) // fe.hop_length + 1, 0),
    # Granite Speech: mel frames stacked in groups of `frame_stacking`, the last group padded
    "GraniteSpeech5FeatureExtractor": lambda fe, n: -(-(n // fe.hop_length) // fe.frame_stacking),
}
# What --freeze_feature_encoder freezes in models without freeze_feature_encoder(): the module that turns the input
# into encoder frames. None: nothing (the features go through a single linear projection).
FRONT_ENDS = {
    "wav2vec2-bert": None,
    "parakeet_ctc": "encoder.subsampling",  # 2-D convolutions, 8x subsampling
    "lasr_ctc": "encoder.subsampler",  # 2-D convolutions, 4x subsampling
    "omniasr_ctc": "model.audio_tower.subsampling",  # the wav2vec2-style convolutional feature encoder
    "granite_speech5_ctc": None,
}
# Where each family keeps its encoder layers (the units FSDP wraps); wav2vec2-era models keep them at
# {base_model_prefix}.encoder.layers.
ENCODER_LAYERS = {
    "sew-d": "sew_d.encoder.encoder.layer",
    "parakeet_ctc": "encoder.layers",
    "lasr_ctc": "encoder.layers",
    "omniasr_ctc": "model.audio_tower.layers",
    "granite_speech5_ctc": "encoder.layers",
}


def encoder_config(config):
    """The config holding the encoder's settings: the sub-config of the newer families, else the config itself."""
    return getattr(config, "encoder_config", None) or getattr(config, "audio_config", None) or config


def model_input_names(feature_extractor) -> tuple[str, str]:
    """The model's input (`input_values`: samples, `input_features`: frames) and mask names (OmniASR:
    `padding_mask`)."""
    names = feature_extractor.model_input_names
    return names[0], names[1] if len(names) > 1 else "attention_mask"


def extract_features(feature_extractor, audio: np.ndarray) -> np.ndarray:
    """One clip's model input, time first ([samples] or [frames, features]), cut to the frames the extractor marks
    valid."""
    name, mask_name = model_input_names(feature_extractor)
    inputs = feature_extractor(audio, sampling_rate=feature_extractor.sampling_rate, return_attention_mask=True)
    values = np.asarray(inputs[name][0], dtype=np.float32)
    if name == WAVEFORM_INPUT and values.ndim == 2:  # OmniASR gives the waveform a channel axis: [1, samples]
        values = values[0]
    mask = inputs.get(mask_name)
    return values[: int(np.asarray(mask[0]).sum())] if mask is not None else values


def has_channel_axis(feature_extractor) -> bool:
    """Whether the model reads the waveform with a channel axis ([batch, 1, samples]), as OmniASR does."""
    name, _ = model_input_names(feature_extractor)
    rate = feature_extractor.sampling_rate
    return (name == WAVEFORM_INPUT
            and np.ndim(feature_extractor(np.zeros(rate // 10), sampling_rate=rate)[name][0]) == 2)


def feature_frames(feature_extractor, samples) -> np.ndarray:
    """Input frames the model gets for clips of `samples` samples (the samples themselves for waveform models)."""
    samples = np.asarray(samples, dtype=np.int64)
    if model_input_names(feature_extractor)[0] == WAVEFORM_INPUT:
        return samples
    rule = FEATURE_FRAMES.get(type(feature_extractor).__name__)
    if rule is None:  # an extractor we have no rule for: measure it (exact, but it computes every clip's features)
        return np.array([len(extract_features(feature_extractor, np.zeros(n, np.float32))) for n in samples])
    return rule(feature_extractor, samples)


def output_frames(model, feature_extractor, samples, before_adapter: bool = False) -> np.ndarray:
    """CTC output frames (logits) for clips of `samples` samples, by the model's own length arithmetic.

    `before_adapter`: the frames SpecAugment masks, before a wav2vec2-style adapter (--add_adapter) subsamples them.
    """
    # transformers has no public API for this: the models' private length functions are the only exact source.
    frames = torch.as_tensor(feature_frames(feature_extractor, samples))
    if hasattr(model, "_get_feat_extract_output_lengths"):  # wav2vec2-era and Wav2Vec2-BERT: conv strides (+ adapter)
        skip = before_adapter and getattr(model.config, "add_adapter", False)
        out = model._get_feat_extract_output_lengths(frames, **({"add_adapter": False} if skip else {}))
    elif hasattr(model, "_get_subsampling_output_length"):  # Parakeet, LASR, OmniASR, Granite Speech: subsampling
        out = model._get_subsampling_output_length(frames)
    else:
        raise UserError(f"{type(model).__name__} has no output-length function (_get_feat_extract_output_lengths or "
                        "_get_subsampling_output_length), which the script needs to align labels with its frames.")
    return np.maximum(np.asarray(out, dtype=np.int64), 0)


def configure_model(config, model_args) -> list[str]:
    """Write the regularisation and CTC flags where the family reads them; return the flags it has no setting for.

    An unset flag gets upstream's default in a wav2vec2-era config (upstream writes them all); the newer families keep
    their checkpoint's own value (e.g. Parakeet's dropout 0.1 and ctc_zero_infinity=True).
    """
    encoder = encoder_config(config)
    configs = [config] if encoder is config else [config, encoder]
    unused = []
    for flag, default in UPSTREAM_MODEL_DEFAULTS.items():
        value = getattr(model_args, flag)
        if value is None and encoder is config:
            value = default
        if value is None:
            continue
        targets = [(c, k) for c in configs for k in CONFIG_KEY_ALIASES.get(flag, (flag,)) if hasattr(c, k)]
        for target, key in targets:
            setattr(target, key, value)
        if not targets and getattr(model_args, flag) is not None:
            unused.append(flag)
    config.ctc_loss_reduction = model_args.ctc_loss_reduction
    if hasattr(config, "add_adapter"):
        config.add_adapter = model_args.add_adapter
    elif model_args.add_adapter:
        raise UserError(f"--add_adapter: {config.model_type} models have no adapter; drop the flag.")
    return unused


def has_spec_augment(config) -> bool:
    """Whether the family masks time steps in training (wav2vec2-era and Wav2Vec2-BERT do; the newer ones do not)."""
    return any(hasattr(c, "mask_time_prob") for c in (config, encoder_config(config)))


def set_ctc_vocabulary(config, tokenizer) -> None:
    """Size a new CTC head for `tokenizer`, whose pad token is the blank of the loss and of decoding."""
    config.vocab_size = len(tokenizer)
    config.pad_token_id = tokenizer.pad_token_id
    if hasattr(config, "blank_token_id"):  # OmniASR's loss reads a blank id of its own
        config.blank_token_id = tokenizer.pad_token_id
    encoder = encoder_config(config)
    if encoder is not config and hasattr(encoder, "vocab_size"):  # Granite ties its head to the encoder's projection
        encoder.vocab_size = len(tokenizer)


def blank_token_id(config, tokenizer) -> int:
    """The CTC blank: OmniASR's own `blank_token_id`, else the tokenizer's pad token (what CTC tokenizers drop, and
    what the loss reads as `pad_token_id` once load_model has aligned the two)."""
    blank = getattr(config, "blank_token_id", None)
    return tokenizer.pad_token_id if blank is None else blank


def ctc_head_name(model) -> str:
    """Where the CTC projection lives: `lm_head` (wav2vec2-era, Wav2Vec2-BERT) or `ctc_head` (newer families)."""
    return "ctc_head" if hasattr(model, "ctc_head") else "lm_head"


def encoder_layer_classes(model) -> list[str]:
    """The class names of the model's encoder layers (ENCODER_LAYERS), which FSDP's auto-wrap shards one by one. Read
    from the model, so a config's variant is caught (wav2vec2-large's Wav2Vec2EncoderLayerStableLayerNorm)."""
    path = ENCODER_LAYERS.get(model.config.model_type, f"{model.base_model_prefix}.encoder.layers")
    return sorted({type(layer).__name__ for layer in model.get_submodule(path)})


def answer_no_input_embeddings(model) -> None:
    """Speech models have no input embeddings, and transformers raises when asked for them (wav2vec2, Granite, ...);
    accelerate's FSDP asks every model (to shard them apart). Make this one answer None instead."""
    try:
        model.get_input_embeddings()
    except NotImplementedError:
        model.get_input_embeddings = lambda: None


def front_end_path(model):
    """The module path of the model's convolutional feature encoder or subsampling stack (None: it has none)."""
    if hasattr(model, "freeze_feature_encoder"):  # wav2vec2-era: {base_model_prefix}.feature_extractor
        return f"{model.base_model_prefix}.feature_extractor"
    return FRONT_ENDS.get(model.config.model_type)


def freeze_front_end(model) -> str:
    """--freeze_feature_encoder: freeze the convolutional feature encoder or subsampling stack; say what was frozen."""
    if hasattr(model, "freeze_feature_encoder"):
        model.freeze_feature_encoder()
        return "froze the convolutional feature encoder"
    path = FRONT_ENDS.get(model.config.model_type)
    if path is None:
        return "froze nothing (this model has no convolutional front end)"
    model.get_submodule(path).requires_grad_(False)
    return f"froze the front end ({path})"


def processor_class(model_type: str):
    """The family's own processor class, so AutoProcessor and the pipeline load what we save."""
    # transformers' own model type -> processor table; no public function answers this without a saved checkpoint
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    return getattr(transformers, PROCESSOR_MAPPING_NAMES.get(model_type) or "Wav2Vec2Processor")


def is_character_tokenizer(tokenizer) -> bool:
    """Whether the tokenizer spells transcripts unit by unit (characters or phonemes) rather than in subword pieces."""
    return isinstance(tokenizer, (Wav2Vec2CTCTokenizer, Wav2Vec2PhonemeCTCTokenizer))


def ctc_decode(tokenizer, ids, blank_id: int) -> str:
    """Greedy CTC output to text: repeats merged, blanks (and -100 past the clip's end) dropped, then the tokenizer
    joins the tokens at its own word boundaries (`|` or SentencePiece's `▁`)."""
    kept = [int(i) for i, _ in itertools.groupby(ids) if i != blank_id and i != LABEL_PAD_ID]
    return tokenizer.decode(kept, group_tokens=False)  # CTC tokenizers would merge repeats again: we already did


def decode_labels(tokenizer, ids) -> str:
    """A label sequence (padded with -100) back to its text; repeated tokens are real here."""
    return tokenizer.decode([int(i) for i in ids if i != LABEL_PAD_ID], group_tokens=False)
