"""Random-weight models of real releases' shapes, built from configs (no network): what the speed benchmarks time
where the demo's small model would say little about a real one.

    wav2vec2_base_shape(root)   wav2vec2-base (95M parameters; group norm, no attention mask: each clip runs alone)
    parakeet_shape(root)        Parakeet CTC 0.6B (FastConformer, 24 layers of 1024)

Each is saved once under `root` with a feature extractor and a tokenizer that covers its head, and reused."""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), os.path.join(os.path.dirname(HERE), "tests")]


def wav2vec2_base_shape(root: str) -> str:
    import transformers
    from transformers import Wav2Vec2CTCTokenizer

    from ctc_finetune.text import build_vocab

    path = os.path.join(root, "wav2vec2-base-shape")
    if not os.path.isfile(os.path.join(path, "model.safetensors")):
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "vocab.json"), "w") as f:
            json.dump(build_vocab(["abcdefghijklmnopqrstuvwxyz'"], "|", "[UNK]", "[PAD]"), f)
        tokenizer = Wav2Vec2CTCTokenizer(os.path.join(path, "vocab.json"), unk_token="[UNK]", pad_token="[PAD]")
        config = transformers.Wav2Vec2Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
        transformers.Wav2Vec2ForCTC(config).save_pretrained(path)  # the published base config's sizes
        transformers.Wav2Vec2FeatureExtractor(return_attention_mask=False, do_normalize=True).save_pretrained(path)
        tokenizer.save_pretrained(path)
    return path


def parakeet_shape(root: str) -> str:
    import transformers
    from tiny_models import make_checkpoint

    path = os.path.join(root, "parakeet-ctc-0.6b-shape")
    if not os.path.isfile(os.path.join(path, "model.safetensors")):
        make_checkpoint(path, "parakeet_ctc", tokenizer_vocab_size=1024)  # its tokenizer, extractor and processor
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        encoder = transformers.ParakeetEncoderConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=8,
                                                     intermediate_size=4096)
        config = transformers.ParakeetCTCConfig(encoder_config=encoder.to_dict(), vocab_size=len(tokenizer),
                                                pad_token_id=tokenizer.pad_token_id)
        transformers.ParakeetForCTC(config).save_pretrained(path)
    return path
