"""Serving: throughput, latency and memory of serve.py under concurrent clients, against the server a user would
write (bench/naive_server.py: `transformers.pipeline` in a FastAPI handler) and the same work without a server.

    python bench/serve.py [--model bench/start_model] [--clients 16] [--requests 400] [--device cpu]
    python bench/serve.py --shape wav2vec2-base      # a random-weight wav2vec2-base-shaped model instead
    python bench/serve.py --onnx int8                # serve.py --onnx int8 (exported first when missing)

Clients run on this machine, each posting the test clips of --corpus (default examples/demo_corpus; a larger corpus:
`python tools/make_bench_corpus.py DIR`, then --corpus DIR) one after another, and every run is bounded in requests
and time (--seconds); each server starts on a free 127.0.0.1 port and is stopped at the end.
Printed, one line per server and load:
  - audio seconds served per second and requests per second, p50 and p95 latency, errors;
  - serve.py at --clients against the naive server at --clients (throughput ratio, p95 ratio);
  - serve.py with batching across requests against --max_batch_seconds 0;
  - p95 at --clients against one client alone (one request at a time);
  - the same clips transcribed in this process by the engine on all cores (no HTTP): the server's share of it;
  - serve.py's RSS over --soak requests (after a warm-up), in MiB, and its growth;
  - a live stream (/v1/realtime) of --stream_seconds of the clips joined with pauses, sent at the pace of real time in
    100 ms pieces, alone and while the 16 clients are at work: the time from each utterance's end (its last sound) to
    its final transcript (p50, p95); the pause the stream waits for (streaming.CLOSE_SECONDS) is part of it.
"""

import argparse
import concurrent.futures
import json
import os
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
from corpus import DEFAULT_CORPUS, read_split, repeated, require  # noqa: E402

ENV = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
WORK = os.path.join(ROOT, "outputs", "serve_bench")
START_SECONDS = 300  # the longest a server may take to answer /health
END_THRESHOLD = 0.02  # an utterance ends at its last 10 ms frame with an RMS over this share of its loudest frame's


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process on a free localhost port, up once /health answers, stopped on exit."""

    def __init__(self, command: list[str], name: str):
        import httpx2 as httpx

        self.port, self.name = free_port(), name
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(WORK, f"{name}.log"), "w")
        self.proc = subprocess.Popen([*command, "--port", str(self.port)], stdout=self.log, stderr=subprocess.STDOUT,
                                     env=ENV, cwd=ROOT)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"error: {name} exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        sys.exit(f"error: {name} did not answer /health within {START_SECONDS} s; see {self.log.name}")

    def rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def post(client, server: Server, clip: dict, served_name: str) -> tuple[float, str]:
    """One request: (latency in seconds, the text, or "" with an error)."""
    with open(clip["path"], "rb") as f:
        files = {"file": (os.path.basename(clip["path"]), f.read())}
    start = time.perf_counter()
    if served_name:  # serve.py: the OpenAI route
        r = client.post(server.url + "/v1/audio/transcriptions", files=files, data={"model": served_name})
    else:
        r = client.post(server.url + "/transcribe", files=files)
    latency = time.perf_counter() - start
    return latency, r.json()["text"] if r.status_code == 200 else ""


def load(server: Server, clips: list[dict], clients: int, requests: int, seconds: float, served_name: str = ""
         ) -> dict:
    """`clients` threads posting clips one after another until `requests` are done or `seconds` pass."""
    import httpx2 as httpx

    deadline = time.monotonic() + seconds
    todo = iter(range(requests))

    def client_loop() -> list[tuple]:
        done = []
        with httpx.Client(timeout=120) as client:
            for i in todo:
                if time.monotonic() > deadline:
                    break
                clip = clips[i % len(clips)]
                done.append((clip, *post(client, server, clip, served_name)))
        return done

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = [r for f in [pool.submit(client_loop) for _ in range(clients)] for r in f.result()]
    wall = time.perf_counter() - start
    latencies = sorted(r[1] for r in results)
    audio = sum(r[0]["duration"] for r in results)
    return {"requests": len(results), "errors": sum(1 for r in results if not r[2]), "wall": wall,
            "audio_per_second": audio / wall, "requests_per_second": len(results) / wall,
            "p50": statistics.median(latencies), "p95": latencies[int(0.95 * (len(latencies) - 1))],
            "texts": {r[0]["path"]: r[2] for r in results}}


def show(label: str, r: dict) -> None:
    print(f"  {label:34} {r['audio_per_second']:8.1f} audio s/s {r['requests_per_second']:6.1f} req/s  "
          f"p50 {r['p50'] * 1000:6.0f} ms  p95 {r['p95'] * 1000:6.0f} ms  {r['requests']} requests, "
          f"{r['errors']} errors", flush=True)


def in_process(model: str, clips: list[dict], onnx) -> dict:
    """The same clips through the engine in this process (decode, features, forward, decoding): no server."""
    from ctc_finetune.engine import Engine, EngineOptions

    engine = Engine(model, EngineOptions(device="cpu", onnx=onnx))
    engine.transcribe_many([c["path"] for c in clips[:5]])
    start = time.perf_counter()
    engine.transcribe_many([c["path"] for c in clips])
    wall = time.perf_counter() - start
    return {"audio_per_second": sum(c["duration"] for c in clips) / wall}


def soak(server: Server, clips: list[dict], count: int, served_name: str) -> tuple[float, float]:
    """RSS after a warm-up of 50 requests and after `count` more, in MiB."""
    load(server, clips, 4, 50, 600, served_name)
    before = server.rss_mib()
    load(server, clips, 4, count, 1800, served_name)
    return before, server.rss_mib()


def joined_recording(clips: list[dict], seconds: float, path: str) -> list[float]:
    """The clips in order, each after 0.5-1.0 s of digital silence, up to `seconds`, as a 16-bit WAV at 16 kHz.
    Returns where each utterance ends (seconds into the recording): its clip's last 10 ms frame whose RMS passes
    END_THRESHOLD of the clip's loudest frame (bench/align.py's ONSET_SHARE, read from the other end)."""
    import numpy as np
    import soundfile as sf

    from ctc_finetune.audio import load_audio

    rng, parts, ends, total = np.random.default_rng(0), [], [], 0
    for i in range(10_000):
        pause = np.zeros(round(rng.uniform(0.5, 1.0) * 16000), np.float32)
        audio = load_audio(clips[i % len(clips)]["path"], 16000)
        frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
        rms = np.sqrt(np.mean(frames ** 2, axis=1))
        loud = np.flatnonzero(rms > END_THRESHOLD * rms.max())
        last_loud = int(loud[-1]) if loud.size else len(rms) - 1  # a silent clip ends where it does
        parts += [pause, audio]
        ends.append((total + len(pause) + (last_loud + 1) * 160) / 16000)
        total += len(pause) + len(audio)
        if total >= seconds * 16000:
            break
    sf.write(path, np.concatenate(parts + [np.zeros(16000, np.float32)]), 16000, subtype="PCM_16")
    return ends


def stream_latency(server: Server, path: str, ends: list[float]) -> list[float]:
    """A live stream sent at the pace of real time: seconds from each utterance's end (`ends`, where its sound ends
    in the stream, as sent) to the arrival of the final transcript that holds it (the one whose last word ends
    nearest)."""
    import base64
    import threading

    import soundfile as sf
    from websockets.sync.client import connect

    pcm, rate = sf.read(path, dtype="int16")
    step, latencies = rate // 10, []
    with connect(server.url.replace("http", "ws") + "/v1/realtime", max_size=None) as ws:
        ws.recv(timeout=30)
        ws.send(json.dumps({"type": "transcription_session.update", "session": {"input_audio_sample_rate": rate}}))
        start = time.perf_counter()

        def receive():
            for message in ws:
                event = json.loads(message)
                if event["type"].endswith("transcription.completed") and event["words"]:
                    end = min(ends, key=lambda e: abs(e - event["words"][-1]["end"]))
                    latencies.append(time.perf_counter() - start - end)

        receiver = threading.Thread(target=receive, daemon=True)
        receiver.start()
        for i in range(0, len(pcm), step):
            time.sleep(max(0.0, start + (i + step) / rate - time.perf_counter()))  # the piece is recorded by now
            ws.send(json.dumps({"type": "input_audio_buffer.append",
                                "audio": base64.b64encode(pcm[i:i + step].tobytes()).decode()}))
        time.sleep(2)
    receiver.join(timeout=5)
    return latencies


def prepare_model(args) -> tuple[str, str]:
    """The model folder to serve and its served name (an export made for --onnx when missing)."""
    model = args.model
    if args.shape:
        from shapes import wav2vec2_base_shape

        model = wav2vec2_base_shape(os.path.join(WORK, "models"))
    if args.onnx:
        from ctc_finetune.onnx_runtime import ONNX_FILES

        if not os.path.isfile(os.path.join(model, ONNX_FILES[args.onnx])):
            command = [sys.executable, os.path.join(ROOT, "export_onnx.py"), model,
                       *(["--int8", "--int8_tolerance", "1e9"] if args.onnx == "int8" else [])]
            subprocess.run(command, check=True, env=ENV)
    return model, os.path.basename(os.path.normpath(model))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.path.join(HERE, "start_model"), help="a trained model folder")
    parser.add_argument("--shape", choices=["wav2vec2-base"], help="serve a random model of this shape instead")
    parser.add_argument("--onnx", choices=["fp32", "int8"], help="serve.py --onnx (exported when missing)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=400, help="per load run")
    parser.add_argument("--seconds", type=float, default=120, help="the longest a load run lasts")
    parser.add_argument("--soak", type=int, default=500, help="requests of the memory check (0: skip it)")
    parser.add_argument("--skip_naive", action="store_true", help="skip the transformers.pipeline server")
    parser.add_argument("--stream_seconds", type=float, default=60, help="the live stream's length (0: skip it)")
    args = parser.parse_args()
    require(args.corpus, "test")
    os.makedirs(WORK, exist_ok=True)
    clips = read_split(args.corpus, "test")
    model, name = prepare_model(args)
    print(f"serve: {model} on {args.device}{f' (ONNX {args.onnx})' if args.onnx else ''}, {len(clips)} test clips "
          f"of {args.corpus} (mean {statistics.mean(c['duration'] for c in clips):.2f} s), {args.clients} clients, "
          f"{os.cpu_count()} CPU cores", flush=True)
    serve = [sys.executable, "serve.py", model, "--device", args.device, *(["--onnx", args.onnx] if args.onnx else [])]
    figures = {}
    with Server(serve, "serve") as server:
        load(server, clips, 2, 20, 60, name)  # warm-up
        figures["alone"] = load(server, clips, 1, min(args.requests, 100), args.seconds, name)
        show("serve.py, 1 client", figures["alone"])
        figures["served"] = load(server, clips, args.clients, args.requests, args.seconds, name)
        show(f"serve.py, {args.clients} clients", figures["served"])
        if args.stream_seconds:
            recording = os.path.join(WORK, "stream.wav")
            ends = joined_recording(clips, args.stream_seconds, recording)
            latencies = sorted(stream_latency(server, recording, ends))
            figures["stream_alone"] = {"p50": statistics.median(latencies),
                                       "p95": latencies[int(0.95 * (len(latencies) - 1))]}
            print(f"  live stream alone: utterance end to final transcript p50 "
                  f"{figures['stream_alone']['p50'] * 1000:.0f} ms, p95 {figures['stream_alone']['p95'] * 1000:.0f} "
                  f"ms ({len(latencies)} utterances)", flush=True)
            with concurrent.futures.ThreadPoolExecutor(1) as pool:  # the clients at work meanwhile
                busy = pool.submit(load, server, clips, args.clients, 100_000, args.stream_seconds, name)
                latencies = sorted(stream_latency(server, recording, ends))
                busy.result()
            figures["stream"] = {"p50": statistics.median(latencies),
                                 "p95": latencies[int(0.95 * (len(latencies) - 1))], "utterances": len(latencies)}
            print(f"  live stream beside {args.clients} clients: utterance end to final transcript p50 "
                  f"{figures['stream']['p50'] * 1000:.0f} ms, p95 {figures['stream']['p95'] * 1000:.0f} ms "
                  f"({len(latencies)} utterances)", flush=True)
        if args.soak:
            figures["rss"] = soak(server, clips, args.soak, name)
            before, after = figures["rss"]
            print(f"  RSS over {args.soak} requests: {before:.0f} -> {after:.0f} MiB ({after / before - 1:+.1%})",
                  flush=True)
    with Server([*serve, "--max_batch_seconds", "0"], "serve-unbatched") as server:
        load(server, clips, 2, 20, 60, name)
        figures["unbatched"] = load(server, clips, args.clients, args.requests, args.seconds, name)
        show(f"serve.py unbatched, {args.clients} clients", figures["unbatched"])
    if not args.skip_naive and not args.onnx:
        naive = [sys.executable, os.path.join(HERE, "naive_server.py"), model, "--device", args.device]
        with Server(naive, "naive") as server:
            load(server, clips, 2, 20, 60)
            figures["naive"] = load(server, clips, args.clients, args.requests, args.seconds)
            show(f"pipeline server, {args.clients} clients", figures["naive"])
    figures["in_process"] = in_process(model, repeated(clips, 200, "the test split"), args.onnx)
    summarize(figures, args.clients)


def summarize(figures: dict, clients: int) -> None:
    served, alone = figures["served"], figures["alone"]
    print(f"\n  batching across requests: {served['audio_per_second'] / figures['unbatched']['audio_per_second']:.2f}x "
          f"the throughput of --max_batch_seconds 0")
    print(f"  p95 at {clients} clients: {served['p95'] / alone['p95']:.1f}x one request alone")
    share = served["audio_per_second"] / figures["in_process"]["audio_per_second"]
    print(f"  in one process without a server: {figures['in_process']['audio_per_second']:.1f} audio s/s; "
          f"the server delivers {share:.0%} of it")
    if "naive" in figures:
        naive = figures["naive"]
        print(f"  against the pipeline server: {served['audio_per_second'] / naive['audio_per_second']:.2f}x the "
              f"throughput, p95 {served['p95'] * 1000:.0f} ms against {naive['p95'] * 1000:.0f} ms")
        differ = [p for p, t in served["texts"].items() if p in naive["texts"] and naive["texts"][p].lower() != t.lower()]
        print(f"  texts that differ between the two servers: {len(differ)} of {len(served['texts'])}")
    with open(os.path.join(WORK, "figures.json"), "w") as f:
        json.dump({k: {kk: vv for kk, vv in v.items() if kk != "texts"} if isinstance(v, dict) else v
                   for k, v in figures.items()}, f, indent=2)


if __name__ == "__main__":
    main()
