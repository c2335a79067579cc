"""serve.py on a free localhost port, driven by the real openai client (and httpx2, the HTTP client it installs, for
raw checks): every response format as transcribe.py writes it, the granularity rules, streaming, bad inputs, 16
concurrent clients batched together, the API key, the metrics, a full queue, a client that leaves, and a model
whose windows run alone. One serve.py process serves most tests; servers with other limits run in a thread of the
test process, over the engine it loaded."""

import concurrent.futures
import contextlib
import copy
import importlib.util
import os
import re
import socket
import subprocess
import sys
import threading
import time

import httpx2 as httpx
import numpy as np
import openai
import pytest
import soundfile as sf
import srt
import webvtt
from conftest import DATA_DIR, ROOT, make_finetuned, read_json
from prometheus_client.parser import text_string_to_metric_families
from tiny_models import make_checkpoint

import transcribe
from ctc_finetune.audio import load_audio
from ctc_finetune.engine import Engine, EngineOptions

SERVE = os.path.join(ROOT, "serve.py")
KEY = "test-key"
MODEL = "served-model"
CLIPS = [os.path.join(DATA_DIR, split, name) for split in ("test", "validation", "train")
         for name in sorted(os.listdir(os.path.join(DATA_DIR, split))) if not name.endswith(".csv")]
MP3 = os.path.join(DATA_DIR, "train", "train-00002.mp3")  # 22,050 Hz MP3: decoded and resampled
SHORTEST = os.path.join(DATA_DIR, "train", "train-00000.mp3")
START_SECONDS = 120  # the longest the server may take to answer /health
HOTWORDS_READY = all(importlib.util.find_spec(p) for p in ("pyctcdecode", "pygtrie"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_finetuned(tmp_path_factory.mktemp("finetuned"))


@pytest.fixture(scope="module")
def served(model_dir, tmp_path_factory):
    """serve.py itself, with a key and small limits, on a free port; its URL. Windows wait up to 20 ms for company
    (5 by default), so that 16 clients share forward passes even where a pass is quicker than their uploads."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("serve") / "serve.log", "w+")
    proc = subprocess.Popen([sys.executable, SERVE, model_dir, "--port", str(port), "--device", "cpu", "--api_key",
                             KEY, "--served_model_name", MODEL, "--max_upload_mb", "4", "--max_audio_seconds", "60",
                             "--beam_width", "8", "--max_wait_ms", "20"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, proc, log)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_health(url, proc, log) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise AssertionError(f"serve.py exited with {proc.returncode}:\n{log.read()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"serve.py did not answer /health in {START_SECONDS} s")


@pytest.fixture(scope="module")
def engine(model_dir):
    return Engine(model_dir, EngineOptions(device="cpu"))


@pytest.fixture(scope="module")
def expected(engine):
    """Every fixture clip's Transcript from the engine, by path."""
    results, skipped = engine.transcribe_many(CLIPS)
    assert not skipped
    return dict(zip(CLIPS, results))


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """The fixture clips joined with pauses into one 16-bit recording of about 45 s: several windows."""
    parts = []
    for clip in CLIPS:
        parts += [load_audio(clip, 16000), np.zeros(8000, np.float32)]
    path = str(tmp_path_factory.mktemp("recording") / "recording.wav")
    sf.write(path, np.concatenate(parts), 16000, subtype="PCM_16")
    return path


def client(url, key=KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def upload(path: str) -> tuple:
    with open(path, "rb") as f:
        return os.path.basename(path), f.read()


def post(url, path=SHORTEST, key=KEY, **fields) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}/v1/audio/transcriptions", files={"file": upload(path)}, data=fields, headers=headers,
                      timeout=60)


def metrics(url, key=KEY) -> dict:
    """Every sample of /metrics: {(name, labels as a sorted tuple): value}."""
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def requests_with(status: int, samples: dict) -> float:
    return samples.get(("serve_transcription_requests_total", (("status", str(status)),)), 0.0)


def test_every_response_format_says_what_transcribe_py_writes(served, model_dir, tmp_path):
    outputs = {}
    for extension in (".srt", ".vtt", ".json"):
        outputs[extension] = str(tmp_path / f"out{extension}")
        transcribe.main([model_dir, MP3, "--output", outputs[extension], "--device", "cpu"])
    (record,) = read_json(outputs[".json"])
    api = client(served)

    def ask(fmt, **fields):
        return api.audio.transcriptions.create(file=upload(MP3), model=MODEL, response_format=fmt, **fields)

    assert record["text"] and ask("json").text == record["text"] and ask("text") == record["text"]
    for fmt in ("srt", "vtt"):
        with open(outputs[f".{fmt}"], encoding="utf-8") as f:
            assert ask(fmt) == f.read()
    cues = list(srt.parse(ask("srt")))
    captions = webvtt.from_string(ask("vtt")).captions
    assert cues and len(captions) == len(cues) and [c.content for c in cues] == [c.raw_text for c in captions]
    verbose = ask("verbose_json", timestamp_granularities=["word", "segment"])
    assert (verbose.task, verbose.text, verbose.duration) == ("transcribe", record["text"], record["duration"])
    assert [w.model_dump() for w in verbose.words] == record["words"]  # confidence beside start and end
    starts = [w.start for w in verbose.words]
    assert starts == sorted(starts) and all(0 <= w.start < w.end <= verbose.duration for w in verbose.words)
    segments = verbose.segments
    assert [s.id for s in segments] == list(range(len(segments))) and len(segments) == len(cues)
    assert " ".join(s.text for s in segments) == " ".join(w["word"] for w in record["words"])
    assert all((s.seek, s.tokens, s.temperature, s.compression_ratio, s.no_speech_prob) == (0, [], 0.0, 1.0, 0.0)
               and s.avg_logprob <= 0 for s in segments)


def test_timestamp_granularities_follow_openai_rules(served):
    api = client(served)

    def ask(fmt, granularities=None, **fields):
        extra = {"timestamp_granularities": granularities} if granularities is not None else {}
        return api.audio.transcriptions.create(file=upload(SHORTEST), model=MODEL, response_format=fmt, **extra,
                                               **fields)

    for fmt, granularities in (("json", ["word"]), ("text", ["segment"]), ("verbose_json", ["letter"])):
        with pytest.raises(openai.BadRequestError, match="verbose_json only"):
            ask(fmt, granularities)
    only_words = ask("verbose_json", ["word"])
    assert only_words.words and only_words.segments is None
    default = ask("verbose_json", language="en")
    assert default.segments and default.words is None and default.language == "en"
    # LiteLLM sends the field without brackets
    raw = post(served, response_format="verbose_json", timestamp_granularities="word")
    assert raw.status_code == 200 and raw.json()["words"] and raw.json()["segments"] is None


def test_a_recording_streams_deltas_that_join_into_the_engines_text(served, recording, engine):
    api, reference = client(served), engine.transcribe(recording)
    events = list(api.audio.transcriptions.create(file=upload(recording), model=MODEL, stream=True))
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    assert [e.type for e in events[len(deltas):]] == ["transcript.text.done"]
    assert len(deltas) >= 2  # the recording's windows settle their text one after another
    assert "".join(deltas) == events[-1].text == reference.text
    # Its windows, joined through the batcher, give the engine's words and times too
    verbose = api.audio.transcriptions.create(file=upload(recording), model=MODEL, response_format="verbose_json",
                                              timestamp_granularities=["word"])
    assert [w.model_dump() for w in verbose.words] == reference.words and verbose.duration == reference.duration


def bad_inputs(tmp_path) -> list[tuple]:
    """(what, the request's fields and file, status, message) for each kind of bad request."""
    with open(os.path.join(DATA_DIR, "test", "test-00004.flac"), "rb") as f:
        flac = f.read()
    with open(MP3, "rb") as f:
        mp3 = f.read()
    long_audio = str(tmp_path / "long.wav")  # 70 s (a 16-bit 8 kHz header over --max_audio_seconds 60)
    sf.write(long_audio, np.full(70 * 8000, 0.01, np.float32), 8000, subtype="PCM_16")
    return [
        ("not audio", {"file": ("notes.wav", b"just some text " * 100)}, {}, 400, "unreadable audio"),
        ("empty", {"file": ("empty.wav", b"")}, {}, 400, "empty"),
        ("truncated flac", {"file": ("cut.flac", flac[:len(flac) // 2])}, {}, 400, "undecodable audio"),
        ("truncated mp3", {"file": ("cut.mp3", mp3[:4000])}, {}, 400, r"truncated audio \(its header says 2\.13 s"),
        ("too large", {"file": ("big.wav", os.urandom(5 * 2**20))}, {}, 413, "--max_upload_mb 4 MiB"),
        ("too long", {"file": upload(long_audio)}, {}, 413, "lasts 70.0 s, more than --max_audio_seconds 60"),
        ("wrong model", {"file": upload(SHORTEST)}, {"model": "whisper-1"}, 400, f"serves '{MODEL}'"),
        ("unknown format", {"file": upload(SHORTEST)}, {"response_format": "xml"}, 400, "not one of json, text"),
        ("stream of srt", {"file": upload(SHORTEST)}, {"stream": "true", "response_format": "srt"}, 400,
         "stream=true sends the text as events"),
        ("bad stream flag", {"file": upload(SHORTEST)}, {"stream": "maybe"}, 400, "stream is true or false"),
        ("no file", {}, {"model": MODEL}, 400, "file is missing"),
    ]


def test_bad_inputs_get_their_status_and_message_and_the_server_keeps_serving(served, expected, tmp_path):
    headers = {"Authorization": f"Bearer {KEY}"}
    url = f"{served}/v1/audio/transcriptions"
    for what, files, fields, status, message in bad_inputs(tmp_path):
        r = httpx.post(url, files=files or None, data=fields, headers=headers, timeout=60)
        error = r.json()["error"]
        assert r.status_code == status and re.search(message, error["message"]), (what, r.status_code, error)
        assert set(error) == {"message", "type", "param", "code"}, what
        good = post(served)
        assert good.status_code == 200 and good.json()["text"] == expected[SHORTEST].text, f"after {what}"
    not_a_form = httpx.post(url, json={"file": "x"}, headers=headers)
    assert not_a_form.status_code == 400 and "multipart/form-data" in not_a_form.json()["error"]["message"]


def test_sixteen_concurrent_clients_each_get_their_own_transcript(served, expected):
    """Different clips at once: windows of several requests share forward passes, and no text goes astray."""
    clips = CLIPS[:16]
    before = metrics(served)
    start = threading.Barrier(len(clips))
    api = client(served)

    def one(clip):
        start.wait()
        return api.audio.transcriptions.create(file=upload(clip), model=MODEL).text

    with concurrent.futures.ThreadPoolExecutor(len(clips)) as pool:
        texts = list(pool.map(one, clips))
    assert texts == [expected[c].text for c in clips]
    after = metrics(served)
    passes = after[("serve_batch_windows_count", ())] - before[("serve_batch_windows_count", ())]
    windows = after[("serve_batch_windows_sum", ())] - before[("serve_batch_windows_sum", ())]
    assert windows == len(clips) and passes < len(clips)  # some forward passes held several requests' windows


def test_the_api_key_guards_everything_but_health(served):
    with pytest.raises(openai.AuthenticationError, match="API key"):
        client(served, key="wrong").audio.transcriptions.create(file=upload(SHORTEST), model=MODEL)
    missing = post(served, key=None)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{served}/metrics").status_code == 401 and httpx.get(f"{served}/v1/models").status_code == 401
    assert httpx.get(f"{served}/health").json() == {"status": "ok"}
    assert [m.id for m in client(served).models.list()] == [MODEL]
    assert client(served).models.retrieve(MODEL).id == MODEL


def test_metrics_count_requests_audio_and_batches(served, expected):
    before = metrics(served)
    assert post(served).status_code == 200 and post(served, model="whisper-1").status_code == 400
    after = metrics(served)
    assert requests_with(200, after) - requests_with(200, before) == 1
    assert requests_with(400, after) - requests_with(400, before) == 1
    audio = after[("serve_audio_seconds_total", ())] - before[("serve_audio_seconds_total", ())]
    assert audio == pytest.approx(expected[SHORTEST].duration)
    assert after[("serve_request_seconds_count", ())] - before[("serve_request_seconds_count", ())] == 2
    assert after[("serve_batch_windows_count", ())] - before[("serve_batch_windows_count", ())] == 1
    assert after[("serve_queue_windows", ())] == 0 and after[("serve_requests_in_progress", ())] == 0


@pytest.mark.skipif(not HOTWORDS_READY, reason="hotwords need pyctcdecode (bash tools/install_extras.sh lm)")
def test_hotwords_are_a_beam_search_as_transcribe_py_runs_it(served, model_dir, expected):
    reference = Engine(model_dir, EngineOptions(device="cpu", hotwords=("zeal",), beam_width=8)).transcribe(MP3).text
    assert "zeal" in reference and "zeal" not in expected[MP3].text  # the hotword pulls the decoding towards it
    raw = post(served, MP3, hotwords="zeal")
    assert raw.status_code == 200 and raw.json()["text"] == reference
    sdk = client(served).audio.transcriptions.create(file=upload(MP3), model=MODEL, extra_body={"keywords": ["zeal"]})
    assert sdk.text == reference


@contextlib.contextmanager
def thread_server(engine, **options):
    """The app over `engine` in a uvicorn thread of this process, on a free port; its URL and Server."""
    import uvicorn

    from ctc_finetune.serving import ServeOptions, build_app

    app = build_app(engine, ServeOptions(MODEL, **options))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}", app.state.server
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_a_full_queue_answers_503_with_retry_after(engine, expected):
    """With --max_queue 1, a request still sending its upload holds the only place."""
    with open(SHORTEST, "rb") as f:
        audio = f.read()
    boundary = "serve-test-boundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.mp3"\r\n\r\n').encode() + \
        audio + f"\r\n--{boundary}--\r\n".encode()
    release = threading.Event()

    def slowly():
        yield body[:100]
        release.wait(30)
        yield body[100:]

    with thread_server(engine, max_queue=1) as (url, server), concurrent.futures.ThreadPoolExecutor(1) as pool:
        held = pool.submit(httpx.post, f"{url}/v1/audio/transcriptions", content=slowly(), timeout=60,
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        wait_until(lambda: server.in_progress == 1)
        busy = post(url, key=None)
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
        assert busy.json()["error"]["code"] == "server_busy"
        release.set()
        assert held.result().status_code == 200 and held.result().json()["text"] == expected[SHORTEST].text
        assert post(url, key=None).status_code == 200


def wait_until(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_client_that_leaves_cancels_its_windows(engine, recording, expected):
    """Each of the recording's windows runs alone (--max_batch_seconds 5) and slowly; the client leaves during the
    first: the others never run, the upload's file is deleted, and the next request is served."""
    slow = copy.copy(engine)
    slow.forward = lambda *args: time.sleep(0.5) or engine.forward(*args)
    with thread_server(slow, max_batch_seconds=5) as (url, server):
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/audio/transcriptions", files={"file": upload(recording)},
                       timeout=httpx.Timeout(30, read=0.25))
        wait_until(lambda: requests_with(499, metrics(url)) == 1 and server.in_progress == 0)
        wait_until(lambda: not os.listdir(server.workdir))
        assert post(url, key=None).json()["text"] == expected[SHORTEST].text  # queued behind any window left
        # One forward pass of the recording's windows (2 or more), one of the next request's
        assert metrics(url)[("serve_batch_windows_count", ())] == 2


def test_a_model_without_attention_mask_runs_each_window_alone(model_dir, tmp_path):
    group_norm = str(tmp_path / "group_norm")
    make_finetuned(group_norm)
    make_checkpoint(group_norm, "wav2vec2", ctc_vocab_size=len(read_json(os.path.join(group_norm, "vocab.json"))),
                    norm="group")
    engine = Engine(group_norm, EngineOptions(device="cpu"))
    clips = CLIPS[:4]
    with thread_server(engine, max_wait_ms=200) as (url, _), concurrent.futures.ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(lambda clip: post(url, clip, key=None).json()["text"], clips))
        samples = metrics(url)
    assert texts == [engine.transcribe(c).text for c in clips]
    assert samples[("serve_batch_windows_count", ())] == samples[("serve_batch_windows_sum", ())] == 4


def test_a_mistake_on_the_command_line_is_one_error_line(tmp_path):
    proc = subprocess.run([sys.executable, SERVE, str(tmp_path), "--max_queue", "0"], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path} is not a model directory (no config.json)."]


# Live streams over the WebSocket, and the web page

def ws_url(url: str) -> str:
    return url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"


def stream_recording(url: str, path: str, piece_seconds: float = 0.1) -> list[dict]:
    """The recording sent as 16-bit PCM in base64 pieces (as fast as the socket takes them), then a commit; every
    event the server sent until the commit was answered."""
    import base64
    import json

    from websockets.sync.client import connect

    pcm, rate = sf.read(path, dtype="int16")
    step = round(piece_seconds * rate)
    events = []
    with connect(ws_url(url), additional_headers={"Authorization": f"Bearer {KEY}"}, max_size=None) as ws:
        events.append(json.loads(ws.recv(timeout=30)))
        ws.send(json.dumps({"type": "transcription_session.update", "session": {"input_audio_sample_rate": rate}}))
        for i in range(0, len(pcm), step):
            ws.send(json.dumps({"type": "input_audio_buffer.append",
                                "audio": base64.b64encode(pcm[i:i + step].tobytes()).decode()}))
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        while True:
            events.append(json.loads(ws.recv(timeout=60)))
            if events[-1]["type"] == "input_audio_buffer.committed" and events[-1]["item_id"] is None:
                break
            if events[-1]["type"] == "conversation.item.input_audio_transcription.completed" and \
                    events[-1]["end"] >= sf.info(path).duration - 1.0:  # the last utterance's final
                break
    return events


def test_a_live_stream_in_100_ms_pieces_ends_with_the_words_of_the_file(served, recording, engine):
    events = stream_recording(served, recording)
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["transcription_session.created", "transcription_session.updated"]
    finals = [e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"]
    assert [w for e in finals for w in e["words"]] == engine.transcribe(recording).words
    assert all(e["transcript"] == " ".join(w["word"] for w in e["words"]) for e in finals)
    assert "conversation.item.input_audio_transcription.partial" in kinds  # text came as audio arrived
    assert kinds.count("input_audio_buffer.speech_started") == len(finals)


def test_a_bad_stream_message_is_an_error_event_and_the_session_goes_on(served):
    import json

    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with connect(ws_url(served), additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        ws.recv(timeout=30)
        for bad in ["not json", json.dumps({"type": "input_audio_buffer.append", "audio": "***"}),
                    json.dumps({"type": "response.create"}),
                    json.dumps({"type": "transcription_session.update", "session": {"input_audio_format": "g711"}})]:
            ws.send(bad)
            error = json.loads(ws.recv(timeout=30))
            assert error["type"] == "error" and error["error"]["message"]
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        assert json.loads(ws.recv(timeout=30)) == {"type": "input_audio_buffer.committed", "item_id": None}
    with connect(ws_url(served)) as ws:  # no key
        error = json.loads(ws.recv(timeout=30))
        assert error["error"]["code"] == "invalid_api_key" and "Bearer" in error["error"]["message"]
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd.code == 1008


CHROMIUM = __import__("shutil").which("chromium") or __import__("shutil").which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH: `bash tools/install_extras.sh report` installs it")
def test_the_page_uploads_a_clip_and_shows_its_words_with_times(served, expected, tmp_path):
    """GET / in headless Chromium, driven over the DevTools protocol: the page asks for the key, a fixture clip is
    put in its file input, and the words appear with their times (a screenshot is kept beside the test's files)."""
    import base64
    import json

    from websockets.sync.client import connect

    port = free_port()
    browser = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                f"--remote-debugging-port={port}", f"--user-data-dir={tmp_path / 'profile'}",
                                "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        target = wait_for_devtools(port)
        with connect(target, max_size=None) as cdp:
            calls = iter(range(1, 10_000))

            def call(method, **params):
                number = next(calls)
                cdp.send(json.dumps({"id": number, "method": method, "params": params}))
                while True:
                    reply = json.loads(cdp.recv(timeout=60))
                    if reply.get("id") == number:
                        assert "error" not in reply, reply
                        return reply["result"]

            call("Page.enable")
            call("Page.addScriptToEvaluateOnNewDocument", source=f"window.prompt = () => {KEY!r};")
            call("Page.navigate", url=served + "/")
            wait_for_page(call, "document.getElementById('model').textContent === 'model: " + MODEL + "'")
            root = call("DOM.getDocument")["root"]["nodeId"]
            node = call("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]
            clip = CLIPS[0]
            call("DOM.setFileInputFiles", files=[clip], nodeId=node)
            wait_for_page(call, "document.querySelectorAll('#transcript .word').length > 0")
            titles = call("Runtime.evaluate", expression="[...document.querySelectorAll('#transcript .word')]"
                          ".map(w => w.title)", returnByValue=True)["result"]["value"]
            shot = call("Page.captureScreenshot", format="png")["data"]
            (tmp_path / "page.png").write_bytes(base64.b64decode(shot))
    finally:
        browser.terminate()
        browser.wait(timeout=30)
    words = expected[clip].words
    assert len(titles) == len(words)
    assert titles[0].startswith(f"{words[0]['start']:.2f}–{words[0]['end']:.2f} s, confidence")


def wait_for_devtools(port: int) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            pages = httpx.get(f"http://127.0.0.1:{port}/json", timeout=1).json()
            for page in pages:
                if page.get("type") == "page":
                    return page["webSocketDebuggerUrl"]
        time.sleep(0.2)
    raise AssertionError("headless Chromium did not open its DevTools port in 60 s")


def wait_for_page(call, condition: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if call("Runtime.evaluate", expression=condition, returnByValue=True)["result"].get("value") is True:
            return
        time.sleep(0.2)
    raise AssertionError(f"the page never got to: {condition}")


def resident_bytes(url: str) -> float:
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    return next(s.value for family in text_string_to_metric_families(text) for s in family.samples
                if s.name == "process_resident_memory_bytes")


def test_a_soak_of_500_requests_keeps_memory_flat(served, expected):
    clip = SHORTEST
    with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {KEY}"}) as client:
        def ask():
            with open(clip, "rb") as f:
                r = client.post(f"{served}/v1/audio/transcriptions", files={"file": ("a.mp3", f.read())},
                                data={"model": MODEL, "response_format": "text"})
            assert r.status_code == 200 and r.text == expected[clip].text

        for _ in range(50):  # warm-up: the allocator's pools, the first batches of each size
            ask()
        before = resident_bytes(served)
        for _ in range(500):
            ask()
        after = resident_bytes(served)
    assert after <= 1.10 * before, f"RSS grew from {before / 2**20:.0f} to {after / 2**20:.0f} MiB"


def test_a_stream_past_max_audio_seconds_is_closed_with_its_reason(served):
    # Binary messages are raw 16-bit PCM; the served server takes at most 60 s per request or stream
    import json

    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with connect(ws_url(served), additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        ws.recv(timeout=30)
        ws.send(json.dumps({"type": "transcription_session.update", "session": {"input_audio_sample_rate": 16000}}))
        assert json.loads(ws.recv(timeout=30))["type"] == "transcription_session.updated"
        silence = np.zeros(16000 * 10, np.int16).tobytes()
        for _ in range(7):  # 70 s of digital silence: no utterance, so no event, until the limit
            ws.send(silence)
        error = json.loads(ws.recv(timeout=30))
        assert error["error"]["code"] == "audio_too_long" and "--max_audio_seconds" in error["error"]["message"]
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd.code == 1008
