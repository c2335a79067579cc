"""Large corpora: on-the-fly setup decodes nothing; tar shards (WebDataset) train and evaluate."""

import run_speech_recognition_ctc as ctc
from conftest import DATA_DIR, base_args, read_json


def count_decodes(monkeypatch) -> list:
    """Every clip decoded from now on, in this process (the DataLoader must run without workers)."""
    calls = []
    real = ctc.load_audio
    monkeypatch.setattr(ctc, "load_audio", lambda *a, **k: calls.append(str(a[0])) or real(*a, **k))
    return calls


def test_on_the_fly_setup_decodes_nothing(tmp_path, encoder_dir, monkeypatch):
    # Length grouping, the data report and the logged samples read the header scan; the only clips decoded are
    # the ones the training steps and the evaluation consume.
    calls = count_decodes(monkeypatch)
    for strategy in ({"train_sampling_strategy": "group_by_length"}, {"max_batch_duration": 8}):
        calls.clear()
        out = tmp_path / next(iter(strategy))
        ctc.main(base_args(encoder_dir, DATA_DIR, str(out), preprocess_on_the_fly=True, max_steps=1,
                           per_device_train_batch_size=2, **strategy))
        train = [c for c in calls if "/train/" in c]
        assert 1 <= len(train) <= 4  # of 12: the step's batch and the one the loader fetches ahead, at most 2 clips each
        assert len(calls) - len(train) == read_json(out / "eval_results.json")["eval_samples"]
