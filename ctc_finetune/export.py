# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""ONNX export: a CTC model exported to ONNX (fp32, and int8 by onnxruntime's quantization), the files
export_onnx.py writes and onnx_runtime runs as if they were the PyTorch model (transcribe.py --onnx, serve.py --onnx).

The graph takes what the feature extractor makes (the waveform normalised, or the filterbank features) and its
mask, with dynamic batch and time axes, and gives the logits: feature extraction and normalisation stay in Python,
the same code as under PyTorch. Two exporters are tried in turn: torch.export (dynamo) and, where it fails, the
TorchScript tracer; an exported graph counts only once onnxruntime reproduces PyTorch's logits at a batch and
length other than the traced ones (a tracer can bake a length in)."""

import contextlib
import io
import logging
import os
import re
import warnings

import numpy as np
import torch

from .batching import DataCollatorCTCWithPadding
from .columns import LENGTH_COLUMN
from .families import extract_features, has_channel_axis, model_input_names
from .faults import UserError
from .onnx_runtime import OnnxSession, require_onnx

logger = logging.getLogger(__name__)

INT8_OPS = ("MatMul", "Gemm")  # what --int8 quantizes by default: icefall's advice (a conformer's convolutions lost)
OPSET = 18
TRACE_SECONDS = (1.0, 0.7)  # the example batch the graph is traced with
CHECK_SECONDS = (1.6, 1.3, 0.45)  # and the other batch it must reproduce PyTorch on


class LogitsOnly(torch.nn.Module):
    """The CTC model as a function of positional tensors (its inputs in `names` order) to logits, for the exporter."""

    def __init__(self, model, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs):
        return self.model(**dict(zip(self.names, inputs))).logits


def model_batch(feature_extractor, clips: list[np.ndarray]) -> dict:
    """The padded model input of these clips (at the model's rate), as transcribe.py batches them."""
    name, _ = model_input_names(feature_extractor)
    collate = DataCollatorCTCWithPadding(feature_extractor, channel_axis=has_channel_axis(feature_extractor))
    batch = collate([{name: extract_features(feature_extractor, c), LENGTH_COLUMN: len(c)} for c in clips])
    batch.pop("input_lengths")
    return dict(batch)


def example_batch(feature_extractor, seconds, seed: int = 0) -> dict:
    """The model input of clips of noise of these lengths."""
    rng = np.random.default_rng(seed)
    rate = feature_extractor.sampling_rate
    return model_batch(feature_extractor, [0.1 * rng.standard_normal(round(s * rate)).astype(np.float32)
                                           for s in seconds])


def time_axes(first: dict, second: dict) -> dict:
    """Each input's time axis: the axis past the batch's whose length differs between two batches of other lengths."""
    axes = {}
    for name, tensor in first.items():
        differ = [a for a in range(1, tensor.ndim) if tensor.shape[a] != second[name].shape[a]]
        if len(differ) != 1:
            raise UserError(f"cannot tell the time axis of the model input {name} (shapes {tuple(tensor.shape)} and "
                            f"{tuple(second[name].shape)}).")
        axes[name] = differ[0]
    return axes


@contextlib.contextmanager
def quiet():
    """Keep the exporters' and the quantizer's chatter (hundreds of lines on stdout, in warnings and in log records of
    every logger) back; errors still raise."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def export_graph(model, inputs: dict, axes: dict, path: str, exporter: str) -> None:
    """Write the model's graph to `path` with one exporter ("dynamo" or "torchscript"); its chatter is kept back."""
    names = list(inputs)
    wrapper, args = LogitsOnly(model, names).eval(), tuple(inputs.values())
    big = sum(p.numel() * p.element_size() for p in model.parameters()) > 1.8 * 2**30  # ONNX's protobuf limit is 2 GB
    with quiet(), torch.no_grad():
        if exporter == "dynamo":
            batch, time = torch.export.Dim("batch", min=1), torch.export.Dim("time", min=2)
            shapes = tuple({0: batch, axes[n]: time} for n in names)
            torch.onnx.export(wrapper, args, path, input_names=names, output_names=["logits"],
                              dynamic_shapes=(shapes,), dynamo=True, opset_version=OPSET, external_data=big)
        else:
            dynamic = {n: {0: "batch", axes[n]: "time"} for n in names} | {"logits": {0: "batch", 1: "frames"}}
            torch.onnx.export(wrapper, args, path, input_names=names, output_names=["logits"], dynamic_axes=dynamic,
                              dynamo=False, opset_version=17)


def export_onnx(model, feature_extractor, path: str) -> str:
    """Export the model (eval mode, on CPU) to `path`; return the exporter that made a graph reproducing PyTorch.

    Raises UserError (the family does not export) when neither exporter's graph runs and matches."""
    require_onnx()
    traced = example_batch(feature_extractor, TRACE_SECONDS)
    check = example_batch(feature_extractor, CHECK_SECONDS, seed=1)
    axes = time_axes(traced, check)
    with torch.no_grad():
        expected = model(**check).logits.numpy()
    failures = []
    for exporter in ("dynamo", "torchscript"):
        remove_onnx(path)  # nothing of a failed attempt (its external weights) is left beside the next one
        try:
            export_graph(model, traced, axes, path, exporter)
            got = OnnxSession(path).run(check)
            diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
            if diff <= 1e-3 * max(1.0, float(np.abs(expected).max())):
                return exporter
            failures.append(f"{exporter}: its graph does not reproduce PyTorch (largest logit difference {diff:.3g})")
        except Exception as e:  # the exporters raise many kinds; each is reported and the next exporter tried
            failures.append(f"{exporter}: {exporter_error(e)}")
    remove_onnx(path)
    raise UserError(f"{model.config.model_type} does not export to ONNX with torch {torch.__version__} ("
                    f"{'; '.join(failures)}); run it under PyTorch (transcribe.py without --onnx).")


def exporter_error(error: Exception) -> str:
    """The gist of an exporter's exception: the line of its summary that names the cause (torch.onnx wraps the cause
    in pages of advice), else its first line."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(error).splitlines()]
    causes = [line for line in lines if line.startswith("<class '")]
    gist = causes[0] if causes else next((line for line in lines if line), type(error).__name__)
    return f"{type(error).__name__}: {gist[:240]}"


def quantize_int8(source: str, target: str, ops=INT8_OPS, calibration: list[dict] = ()) -> None:
    """Write `target`: `source` with its `ops` nodes in int8. MatMul and Gemm by onnxruntime's dynamic quantization
    (int8 weights, the activations quantized as they come); Conv, if asked, statically (QLinearConv, per-channel
    weights, the activations' ranges measured on the `calibration` model inputs), because onnxruntime's dynamic
    ConvInteger runs slower than the fp32 convolution on CPU."""
    from onnxruntime import quantization as q

    class Inputs(q.CalibrationDataReader):
        def __init__(self, session: OnnxSession):
            self.feeds = iter([{n: np.asarray(b[n]).astype(t) for n, t in session.inputs.items()}
                               for b in calibration])

        def get_next(self):
            return next(self.feeds, None)

    big = file_bytes(source) > 1.8 * 2**30
    dynamic = [op for op in ops if op != "Conv"]
    staged = target + ".conv.onnx"
    with quiet():
        if "Conv" in ops:
            if not calibration:
                raise UserError("int8 Conv needs calibration clips (export_onnx.py --clips).")
            q.quantize_static(source, staged, Inputs(OnnxSession(source)), quant_format=q.QuantFormat.QOperator,
                              op_types_to_quantize=["Conv"], per_channel=True, weight_type=q.QuantType.QInt8,
                              activation_type=q.QuantType.QUInt8, use_external_data_format=big)
            source = staged
        if dynamic:
            q.quantize_dynamic(source, target, op_types_to_quantize=dynamic, weight_type=q.QuantType.QInt8,
                               use_external_data_format=big)
        else:
            os.replace(staged, target)
    remove_onnx(staged)


def remove_onnx(path: str) -> None:
    """Delete an ONNX file and its external weights (`path`.data), those that exist."""
    for leftover in (path, path + ".data"):
        if os.path.exists(leftover):
            os.remove(leftover)


def file_bytes(path: str) -> int:
    """An ONNX file's size with its external weights (`path`.data), if it has any."""
    return sum(os.path.getsize(p) for p in (path, path + ".data") if os.path.exists(p))
