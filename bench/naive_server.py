"""The server a user would write without serve.py, as bench/serve.py's baseline: `transformers.pipeline` called in a
FastAPI handler, one request at a time per handler thread, no batching across requests.

    python bench/naive_server.py MODEL_DIR --port 8001

POST /transcribe (multipart `file`) answers {"text"}; GET /health answers once the model is loaded. The upload is
decoded with soundfile and resampled with soxr (the pipeline's own decoding needs FFmpeg, which this machine lacks)."""

import argparse
import io

import numpy as np
import soundfile as sf
import soxr
import uvicorn
from fastapi import FastAPI, File, UploadFile
from transformers import pipeline


def build_app(model_dir: str, device: str) -> FastAPI:
    asr = pipeline("automatic-speech-recognition", model=model_dir, device=device)
    rate = asr.feature_extractor.sampling_rate
    app = FastAPI()

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.post("/transcribe")
    def transcribe(file: UploadFile = File(...)):  # a plain def: FastAPI runs it in its thread pool
        audio, source_rate = sf.read(io.BytesIO(file.file.read()), dtype="float32")
        if audio.ndim > 1:
            audio = audio.mean(axis=1)
        if source_rate != rate:
            audio = soxr.resample(audio, source_rate, rate)
        return {"text": asr(np.ascontiguousarray(audio))["text"]}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    uvicorn.run(build_app(args.model_dir, args.device), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
