"""Tiny random-weight checkpoints of every architecture the script supports, built from configs (no download).

Two kinds of families:

* the wav2vec2-era ones (`ARCHITECTURES`): a raw-waveform conv feature encoder + transformer, saved with a
  `Wav2Vec2FeatureExtractor` and no tokenizer (`make_checkpoint(path, "wavlm")`);
* the newer CTC families of transformers 5.x (`NEW_FAMILIES`), each saved the way its real release ships on the
  hub: model + feature extractor + (where the release has one) tokenizer and processor
  (`make_checkpoint(path, "parakeet_ctc")`).

The models are tiny (hidden size 32, 2 layers, 2 heads, small conv channels) but keep the releases' time
arithmetic (16 kHz, 10 ms hops, mel bins, subsampling factors and conv strides) and their token-id layouts
(blank/pad/unk ids and special tokens). Tokenizers are trained with the `tokenizers` library on `ENGLISH_TEXT`
(generic text, not the fixture transcripts) or on any other text given as `tokenizer_text=`.
"""

import json
import os

import torch
import transformers
from transformers import Wav2Vec2FeatureExtractor

# Small enough to train a few steps in seconds on CPU; conv strides 5*4*4 = 80 samples, i.e. 200 frames per second.
CONV = {"conv_dim": (32, 32, 32), "conv_kernel": (10, 8, 4), "conv_stride": (5, 4, 4)}
ENCODER = {
    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
    "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2,
}

# architecture -> (config class, bare encoder class, extra config keys)
ARCHITECTURES = {
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model", {}),
    "hubert": ("HubertConfig", "HubertModel", {}),
    "unispeech": ("UniSpeechConfig", "UniSpeechModel", {}),
    "unispeech-sat": ("UniSpeechSatConfig", "UniSpeechSatModel", {}),
    "sew": ("SEWConfig", "SEWModel", {"squeeze_factor": 2}),
    "sew-d": ("SEWDConfig", "SEWDModel", {"squeeze_factor": 2, "position_buckets": 16, "max_position_embeddings": 64}),
    "wavlm": ("WavLMConfig", "WavLMModel", {"num_buckets": 16, "max_bucket_distance": 64}),
    "data2vec-audio": ("Data2VecAudioConfig", "Data2VecAudioModel", {"conv_pos_kernel_size": 5}),
    "wav2vec2-conformer": ("Wav2Vec2ConformerConfig", "Wav2Vec2ConformerModel", {"conv_depthwise_kernel_size": 7}),
}

# The newer families (model_type as saved in config.json), in the order of the table in the docs.
NEW_FAMILIES = ("wav2vec2-bert", "parakeet_ctc", "lasr_ctc", "omniasr_ctc", "granite_speech5_ctc")
ALL_FAMILIES = tuple(sorted(ARCHITECTURES)) + NEW_FAMILIES

# Transformer body shared by the new families' tiny encoders.
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}

# Generic English (mixed case) to train the shipped tokenizers on. Covers every letter a-z and A-Z; it is not
# made of the fixture transcripts (tests/fixtures/commands/*/metadata.csv).
ENGLISH_TEXT = """\
The quick brown fox jumps over the lazy dog near the river bank.
A journey of a thousand miles begins with a single step.
She sells sea shells by the sea shore every summer morning.
Peter Piper picked a peck of pickled peppers from the market.
How much wood would a woodchuck chuck if a woodchuck could chuck wood?
The weather was cold and windy, so we stayed inside and read books.
My brother plays the violin while my sister paints quiet landscapes.
Every evening the old man walks his dog around the small park.
We bought fresh bread, cheese, apples and a bottle of milk yesterday.
The children laughed when the clown juggled seven colorful balls.
Please remember to water the plants before you leave for work.
The train to the city departs at nine and arrives before noon.
Scientists measured the temperature of the ocean during the storm.
Our neighbours built a wooden fence behind their vegetable garden.
He opened the heavy book and began to read aloud to the class.
The museum displays ancient coins, maps and beautiful glass vases.
Few people know that honey never spoils if it is kept sealed.
The pilot announced that the flight would land in twenty minutes.
Birds were singing loudly in the tall trees outside my bedroom.
Mix the flour with sugar, butter and eggs, then bake for an hour.
Knowledge grows when curious minds ask simple questions.
The jazz band played until midnight at the crowded village square.
Quiet voices drifted from the kitchen where dinner was being cooked.
A zebra, a yak and a fox visited the zoo keeper on Sunday.
Strong winds pushed the sailing boat far away from the harbour.
Many students study mathematics, physics, history and languages.
The doctor advised him to sleep more and to drink plenty of water.
Under the bridge a family of ducks swam slowly against the current.
The library closes early on Fridays during the summer holidays.
Jack quickly moved his queen and won the chess game in five moves.
Vivid dreams kept her awake long after the thunder had passed.
Heavy snow covered the mountains, the roads and the sleepy towns.
The engineer explained how the bridge carries trucks and buses.
Grandmother knitted warm scarves for everyone in the family.
Small boats drift lazily across the calm lake at sunset.
Good morning, Mister Brown. Your parcel arrived an hour ago.
Thank you for calling. Please leave your name and your number.
Which way is the station? Walk straight, then turn at the church.
I would like a cup of tea with lemon and a slice of cake.
They visited Paris, London, Madrid, Vienna and Zurich last year.
EVERY SPRING THE FARMERS PLANT CORN, WHEAT AND BARLEY.
QUICK WORK BY THE FIRE BRIGADE SAVED THE OLD WAREHOUSE.
JUST KEEP YOUR EYES ON THE ROAD AND BOTH HANDS ON THE WHEEL.
The Big Apple Never Sleeps, Said The Excited Young Visitor.
Xavier Quentin Jones Visited Kyoto, Oslo And Zagreb By Train.
Sphinx of black quartz, judge my vow.
Pack my box with five dozen liquor jugs.
Amazingly few discotheques provide jukeboxes.
Waltz, bad nymph, for quick jigs vex.
Jived fox nymph grabs quick waltz.
"""

# Texts in other scripts, e.g. for a shipped tokenizer that does NOT cover English (`tokenizer_text=GREEK_TEXT`).
GREEK_TEXT = """\
Η γρήγορη καφέ αλεπού πηδά πάνω από τον τεμπέλη σκύλο.
Καλημέρα σας, τι κάνετε σήμερα το πρωί στην πόλη;
Ο καιρός είναι ζεστός και ο ουρανός είναι καθαρός.
Τα παιδιά παίζουν στην αυλή του σχολείου με τη μπάλα.
Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.
"""
CYRILLIC_TEXT = """\
Съешь же ещё этих мягких французских булок, да выпей чаю.
В чащах юга жил бы цитрус? Да, но фальшивый экземпляр!
Доброе утро, как у вас дела сегодня в городе?
Дети играют во дворе школы с большим мячом.
Погода сегодня тёплая, и небо совершенно ясное.
"""


class FamilyUnavailable(RuntimeError):
    """A family whose checkpoint can't be built (or used) here, e.g. Granite without a working torchaudio."""


def make_checkpoint(
    path: str,
    arch: str = "wav2vec2",
    ctc_vocab_size: int | None = None,
    norm: str = "layer",
    *,
    tokenizer_text: str | None = None,
    tokenizer_vocab_size: int | None = None,
    seed: int = 0,
) -> str:
    """Save a random tiny checkpoint of `arch` (a model_type: see `ALL_FAMILIES`) into `path`; return its path.

    wav2vec2-era families: a bare encoder, or a CTC model when `ctc_vocab_size` is given. norm="layer" gives a
    feature extractor that returns an attention mask (like large/XLS-R checkpoints); norm="group" gives one
    without (like wav2vec2-base).

    New families: as the release ships. wav2vec2-bert is a bare encoder (a CTC head of `ctc_vocab_size` if given);
    the others have a CTC head of `len(tokenizer)` outputs (or `ctc_vocab_size`, to make a head that mismatches
    its tokenizer), a tokenizer trained on `tokenizer_text` (default `ENGLISH_TEXT`) with about
    `tokenizer_vocab_size` pieces, and the processor. `norm` is ignored for them.
    """
    if arch in ARCHITECTURES:
        return _make_wav2vec2_era(path, arch, ctc_vocab_size, norm)
    if arch not in _BUILDERS:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {ALL_FAMILIES}")
    os.makedirs(path, exist_ok=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        _BUILDERS[arch](
            path, ctc_vocab_size=ctc_vocab_size, text=ENGLISH_TEXT if tokenizer_text is None else tokenizer_text,
            vocab_size=tokenizer_vocab_size,
        )
    return os.path.abspath(path)


def _make_wav2vec2_era(path, arch, ctc_vocab_size, norm):
    config_cls, encoder_cls, extra = ARCHITECTURES[arch]
    config = getattr(transformers, config_cls)(**CONV, **ENCODER, **extra)
    if hasattr(config, "feat_extract_norm"):
        config.feat_extract_norm = norm
        config.do_stable_layer_norm = norm == "layer"
    if ctc_vocab_size is not None:
        config.vocab_size = ctc_vocab_size
        model = transformers.AutoModelForCTC.from_config(config)
    else:
        model = getattr(transformers, encoder_cls)(config)
    model.save_pretrained(path)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
        return_attention_mask=norm == "layer",
    ).save_pretrained(path)
    return os.path.abspath(path)


# --------------------------------------------------------------------------------------------------------------
# Tokenizers: SentencePiece-style (Metaspace "▁") BPE or Unigram, trained with the `tokenizers` library.


def train_sentencepiece(text: str, kind: str, vocab_size: int, special_tokens: list[str], unk_token: str):
    """A `tokenizers.Tokenizer` (kind "bpe" or "unigram") with `special_tokens` at ids 0.. in order.

    Every character of `text` is in the vocabulary (so nothing in it maps to unk); `vocab_size` is an upper
    bound for Unigram on a small text.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    lines = [line for line in text.splitlines() if line.strip()]
    alphabet = sorted({char for char in text if not char.isspace()} | {"▁"})
    if kind == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token=unk_token))
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=special_tokens, initial_alphabet=alphabet, show_progress=False,
        )
    elif kind == "unigram":
        tokenizer = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=special_tokens, unk_token=unk_token, initial_alphabet=alphabet,
            show_progress=False,
        )
    else:
        raise ValueError(kind)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.train_from_iterator(lines, trainer)
    for index, token in enumerate(special_tokens):
        assert tokenizer.token_to_id(token) == index, (token, tokenizer.token_to_id(token))
    return tokenizer


def _unigram_vocab(tokenizer) -> list[tuple[str, float]]:
    return [tuple(item) for item in json.loads(tokenizer.to_str())["model"]["vocab"]]


def _bpe_tokenizer(text, vocab_size, special_tokens, unk_token, pad_token):
    """ParakeetTokenizer around a BPE: CTC decoding (groups repeats, drops the pad = blank)."""
    backend = train_sentencepiece(text, "bpe", vocab_size, special_tokens, unk_token)
    return transformers.ParakeetTokenizer(tokenizer_object=backend, unk_token=unk_token, pad_token=pad_token)


def _lasr_tokenizer(text, vocab_size, special_tokens, **tokens):
    """LasrTokenizer around a Unigram. LasrTokenizer rebuilds its Unigram with unk_id=3 on every load, so the
    4 special tokens come first with "<unk>" 4th; extra_ids=0 adds no <extra_id_*> sentinels past the vocabulary."""
    assert special_tokens[3] == tokens["unk_token"] == "<unk>"
    backend = train_sentencepiece(text, "unigram", vocab_size, special_tokens, "<unk>")
    return transformers.LasrTokenizer(vocab=_unigram_vocab(backend), extra_ids=0, **tokens)


def _save(path, model, feature_extractor, tokenizer=None, processor_cls=None, **processor_kwargs):
    """model + preprocessor_config.json (+ tokenizer files and processor_config.json, as hub releases have)."""
    model.save_pretrained(path)
    feature_extractor.save_pretrained(path)
    if tokenizer is not None:
        processor_cls(feature_extractor, tokenizer, **processor_kwargs).save_pretrained(path)


def _head_size(ctc_vocab_size, tokenizer):
    return len(tokenizer) if ctc_vocab_size is None else ctc_vocab_size


# --------------------------------------------------------------------------------------------------------------
# One builder per new family.


def _build_wav2vec2_bert(path, ctc_vocab_size, text, vocab_size):
    """facebook/w2v-bert-2.0: bare Wav2Vec2BertModel (no head, no tokenizer) + SeamlessM4TFeatureExtractor:
    80 log-mel bins every 10 ms (25 ms window, no padding), stacked in pairs (stride 2) -> 160 dims, 50 frames/s;
    the encoder keeps that rate (no adapter). The preprocessor config names Wav2Vec2BertProcessor, which needs a
    tokenizer the release doesn't have."""
    config = transformers.Wav2Vec2BertConfig(
        **TINY, feature_projection_input_dim=160, conv_depthwise_kernel_size=31, vocab_size=ctc_vocab_size,
    )
    if ctc_vocab_size is not None:
        model = transformers.Wav2Vec2BertForCTC(config)
    else:
        model = transformers.Wav2Vec2BertModel(config)
    feature_extractor = transformers.SeamlessM4TFeatureExtractor(
        feature_size=80, num_mel_bins=80, sampling_rate=16000, padding_value=1.0, stride=2,
        return_attention_mask=True,
    )
    _save(path, model, feature_extractor)
    # As on the hub (transformers 5 drops processor_class when saving a feature extractor alone).
    preprocessor = os.path.join(path, "preprocessor_config.json")
    with open(preprocessor) as handle:
        values = json.load(handle)
    values["processor_class"] = "Wav2Vec2BertProcessor"
    with open(preprocessor, "w") as handle:
        json.dump(values, handle, indent=2, sort_keys=True)


def _build_parakeet_ctc(path, ctc_vocab_size, text, vocab_size):
    """nvidia/parakeet-ctc-0.6b: ParakeetForCTC (head `ctc_head`, 1x1 Conv1d), 80 mel bins every 10 ms, 3 stride-2
    convs (subsampling_factor 8 -> 12.5 frames/s). Tokenizer: SentencePiece BPE with "<unk>" at 0 and the CTC blank
    "<pad>" as the LAST id (= config.pad_token_id)."""
    tokenizer = _bpe_tokenizer(text, vocab_size or 128, ["<unk>"], "<unk>", "<pad>")
    assert tokenizer.pad_token_id == len(tokenizer) - 1
    config = transformers.ParakeetCTCConfig(
        vocab_size=_head_size(ctc_vocab_size, tokenizer), pad_token_id=tokenizer.pad_token_id,
        encoder_config={
            **TINY, "subsampling_factor": 8, "subsampling_conv_channels": 8, "subsampling_conv_kernel_size": 3,
            "subsampling_conv_stride": 2, "num_mel_bins": 80, "conv_kernel_size": 9,
        },
    )
    feature_extractor = transformers.ParakeetFeatureExtractor(
        feature_size=80, sampling_rate=16000, hop_length=160, n_fft=512, win_length=400, preemphasis=0.97,
    )
    _save(path, transformers.ParakeetForCTC(config), feature_extractor, tokenizer, transformers.ParakeetProcessor)


def _build_lasr_ctc(path, ctc_vocab_size, text, vocab_size):
    """google/medasr: LasrForCTC (head `ctc_head`, 1x1 Conv1d), 128 mel bins every 10 ms (400-sample frames, no
    padding), two kernel-5 stride-2 convs (4x -> 25 frames/s). Tokenizer: Unigram LasrTokenizer with
    "<epsilon>" (pad = CTC blank) 0, "<s>" 1, "</s>" 2, "<unk>" 3."""
    tokenizer = _lasr_tokenizer(
        text, vocab_size or 128, ["<epsilon>", "<s>", "</s>", "<unk>"],
        pad_token="<epsilon>", eos_token="</s>", unk_token="<unk>",
    )
    config = transformers.LasrCTCConfig(
        vocab_size=_head_size(ctc_vocab_size, tokenizer), pad_token_id=tokenizer.pad_token_id,
        encoder_config={
            **TINY, "num_mel_bins": 128, "subsampling_conv_channels": 16, "subsampling_conv_kernel_size": 5,
            "subsampling_conv_stride": 2, "conv_kernel_size": 32,
        },
    )
    feature_extractor = transformers.LasrFeatureExtractor(
        feature_size=128, sampling_rate=16000, hop_length=160, n_fft=512, win_length=400,
    )
    _save(path, transformers.LasrForCTC(config), feature_extractor, tokenizer, transformers.LasrProcessor)


def _build_omniasr_ctc(path, ctc_vocab_size, text, vocab_size):
    """hf-audio/omniasr-ctc-300m-v2: OmniASRForCTC (head `ctc_head`, Linear) on raw 16 kHz samples through 7
    convs (kernels 10,3,3,3,3,2,2, strides 5,2,2,2,2,2,2 = 320 samples -> 50 frames/s). Tokenizer: fairseq2
    SentencePiece in a LasrTokenizer: "<s>" 0 (= CTC blank, config.blank_token_id), "<pad>" 1
    (config.pad_token_id), "</s>" 2, "<unk>" 3."""
    tokenizer = _lasr_tokenizer(
        text, vocab_size or 128, ["<s>", "<pad>", "</s>", "<unk>"],
        bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
    )
    config = transformers.OmniASRCTCConfig(
        vocab_size=_head_size(ctc_vocab_size, tokenizer), blank_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        audio_config={
            "model_type": "omniasr_audio", **TINY, "conv_dim": (32,) * 7, "conv_kernel": (10, 3, 3, 3, 3, 2, 2),
            "conv_stride": (5, 2, 2, 2, 2, 2, 2), "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2,
        },
    )
    feature_extractor = transformers.OmniASRFeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, return_attention_mask=True, do_normalize=True,
    )
    _save(path, transformers.OmniASRForCTC(config), feature_extractor, tokenizer, transformers.OmniASRCTCProcessor)


# PyPI's Linux torchaudio wheels are CUDA builds: beside a CPU torch their C extension fails to load
# (libc10_cuda.so), and since transformers imports torchaudio whenever it is installed, that breaks transformers'
# audio code as a whole. Granite only needs torchaudio's pure-torch MelSpectrogram and compute_deltas, so
# installing the wheel without its compiled libraries works:
TORCHAUDIO_INSTALL = (
    'pip install --no-deps "torchaudio==2.11.1" && rm -f "$(python -c '
    "'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])'"
    ')"/torchaudio/lib/*.so'
)


def torchaudio_problem() -> str | None:
    """Why GraniteSpeech5FeatureExtractor can't run here (None when it can). It needs an importable torchaudio
    (MelSpectrogram, compute_deltas); transformers only checks that the package is installed."""
    try:
        import torchaudio  # noqa: F401
        from torchaudio.functional import compute_deltas  # noqa: F401
        from torchaudio.transforms import MelSpectrogram  # noqa: F401
    except Exception as error:  # ImportError, or OSError from a C extension built for CUDA / another torch
        return f"torchaudio does not import ({type(error).__name__}: {error}); on a CPU torch: {TORCHAUDIO_INSTALL}"
    return None


def _build_granite_speech5_ctc(path, ctc_vocab_size, text, vocab_size):
    """IBM Granite Speech 5 CTC: GraniteSpeech5ForCTC (head `ctc_head`, Linear tied to `encoder.out`, the
    mid-layer self-conditioning projection, so encoder_config.vocab_size == vocab_size). 80 log-mel bins every
    10 ms + deltas, frame pairs stacked (320 dims, 50 frames/s), then 2 subsampling blocks (x4 -> 12.5 frames/s).
    Tokenizer: BPE in a ParakeetTokenizer with the CTC blank "<|blank|>" (= pad) at 0 and "<unk>" at 1."""
    problem = torchaudio_problem()
    if problem is not None:
        raise FamilyUnavailable(f"granite_speech5_ctc needs a working torchaudio for its feature extractor; {problem}")
    tokenizer = _bpe_tokenizer(text, vocab_size or 128, ["<|blank|>", "<unk>"], "<unk>", "<|blank|>")
    head = _head_size(ctc_vocab_size, tokenizer)
    config = transformers.GraniteSpeech5CTCConfig(
        vocab_size=head, pad_token_id=tokenizer.pad_token_id,
        encoder_config={**TINY, "vocab_size": head, "num_mel_bins": 80, "subsample_layers": [0, 1]},
    )
    feature_extractor = transformers.GraniteSpeech5FeatureExtractor(
        num_mel_bins=80, sampling_rate=16000, n_fft=512, win_length=400, hop_length=160,
    )
    _save(
        path, transformers.GraniteSpeech5ForCTC(config), feature_extractor, tokenizer,
        transformers.GraniteSpeech5Processor,
    )


_BUILDERS = {
    "wav2vec2-bert": _build_wav2vec2_bert,
    "parakeet_ctc": _build_parakeet_ctc,
    "lasr_ctc": _build_lasr_ctc,
    "omniasr_ctc": _build_omniasr_ctc,
    "granite_speech5_ctc": _build_granite_speech5_ctc,
}
assert tuple(_BUILDERS) == NEW_FAMILIES


# --------------------------------------------------------------------------------------------------------------
# MMS (facebook/mms-1b-all): wav2vec2 with attention adapters, a vocab.json nested by language, one
# adapter.LANG.safetensors per language beside the model, and the tokenizer set to "eng".


def make_mms_checkpoint(path: str, languages: dict | None = None, adapter_attn_dim: int = 8) -> str:
    """A tiny MMS-shaped checkpoint: CTC model with attention adapters, a per-language character tokenizer built from
    `languages` ({iso639-3: text}), and an adapter file per language (the model's own weights are "eng")."""
    from safetensors.torch import save_file
    from transformers import Wav2Vec2CTCTokenizer

    languages = languages or {"eng": ENGLISH_TEXT, "rus": CYRILLIC_TEXT}
    os.makedirs(path, exist_ok=True)
    vocabs = {}
    for language, text in languages.items():
        chars = sorted({c for c in text.lower() if c.isalpha() or c == "'"})
        vocabs[language] = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: i + 5 for i, c in enumerate(chars)}}
    with open(os.path.join(path, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocabs, f, ensure_ascii=False)
    tokenizer = Wav2Vec2CTCTokenizer(os.path.join(path, "vocab.json"), target_lang="eng", pad_token="<pad>",
                                     unk_token="<unk>", word_delimiter_token="|")
    config = transformers.Wav2Vec2Config(**CONV, **ENCODER, adapter_attn_dim=adapter_attn_dim,
                                         vocab_size=len(vocabs["eng"]), feat_extract_norm="layer",
                                         do_stable_layer_norm=True)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = transformers.Wav2Vec2ForCTC(config)
        for language, vocab in vocabs.items():  # each language: its own adapters and CTC head
            model.lm_head = torch.nn.Linear(config.hidden_size, len(vocab))
            model.init_adapter_layers()
            save_file({k: v.detach().contiguous() for k, v in model._get_adapters().items()},
                      os.path.join(path, f"adapter.{language}.safetensors"), metadata={"format": "pt"})
    model.config.vocab_size = len(vocabs["eng"])
    model.save_pretrained(path)
    model = transformers.Wav2Vec2ForCTC.from_pretrained(path, ignore_mismatched_sizes=True)
    model.load_adapter("eng")  # the saved weights are English's, as mms-1b-all's are
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(path)
    return os.path.abspath(path)
