# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""ONNX at run time: an exported CTC model (export.py writes it) run by onnxruntime with what the engine needs of a
PyTorch CTC model, for transcribe.py --onnx and serve.py --onnx; and the exported files' names."""

import os
from types import SimpleNamespace

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCTC

from .faults import UserError

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
ONNX_FILES = {"fp32": ONNX_FILE, "int8": INT8_FILE}
ONNX_INSTALL = "bash tools/install_extras.sh onnx"


def require_onnx(packages=("onnx", "onnxruntime", "onnxscript")) -> None:
    """One error line naming the install command when a package of the export (or, to run one, onnxruntime) is
    missing."""
    for package in packages:
        try:
            __import__(package)
        except ImportError as e:
            raise UserError(f"ONNX export and --onnx need the `{package}` package; run `{ONNX_INSTALL}`.") from e


class OnnxSession:
    """An onnxruntime session over an exported graph, fed with the model input dict PyTorch would get."""

    def __init__(self, path: str, threads: int = 0):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3  # errors only
        try:
            self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile exceptions
            raise UserError(f"{path} is not a usable ONNX model ({str(e).strip().splitlines()[0][:200]}); "
                            f"export it again: python export_onnx.py MODEL_DIR.") from e
        self.inputs = {i.name: np.int64 if "int64" in i.type else np.bool_ if "bool" in i.type else np.float32
                       for i in self.session.get_inputs()}

    def run(self, batch: dict) -> np.ndarray:
        feed = {name: np.asarray(batch[name]).astype(dtype) for name, dtype in self.inputs.items()}
        return self.session.run(["logits"], feed)[0]


class OnnxCTCModel:
    """An exported model run by onnxruntime with what transcribe.py needs of a PyTorch CTC model: `config`, `device`,
    the length arithmetic (from the model class, built without weights) and model(**inputs).logits."""

    def __init__(self, model_dir: str, precision: str = "fp32"):
        require_onnx(("onnxruntime",))
        path = onnx_path(model_dir, precision)
        self.config = AutoConfig.from_pretrained(model_dir)
        self.device = torch.device("cpu")
        self.path, self.precision = path, precision
        self.session = OnnxSession(path)
        with torch.device("meta"):  # the length functions only read the config: no weights are loaded
            shell = AutoModelForCTC.from_config(self.config)
        for name in ("_get_feat_extract_output_lengths", "_get_subsampling_output_length"):
            if hasattr(shell, name):
                setattr(self, name, getattr(shell, name))

    def __call__(self, **inputs):
        return SimpleNamespace(logits=torch.from_numpy(self.session.run(inputs)))

    def eval(self):
        return self

    def to(self, device):
        if torch.device(device).type != "cpu":
            raise UserError("--onnx runs on the CPU (onnxruntime's CPU provider); pass --device cpu.")
        return self


def onnx_path(model_dir: str, precision: str) -> str:
    """The exported file of `precision` in `model_dir`; one error line naming the export command when it is missing."""
    path = os.path.join(model_dir, ONNX_FILES[precision])
    if not os.path.isfile(path):
        flag = " --int8" if precision == "int8" else ""
        raise UserError(f"{path} does not exist; export it first: python export_onnx.py {model_dir}{flag}")
    return path
