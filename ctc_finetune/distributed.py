# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""Distributed training set-up (step 3, and the trainer's accelerator): what DDP, FSDP and activation checkpointing
need of the model (which layers FSDP wraps, whether DDP looks for unused parameters, non-reentrant checkpointing for
LoRA), one OpenMP thread per rank, and FSDP on CPU ranks (CpuFsdp, which CTCTrainer inherits: FSDP turned on, the
FSDP2 fix, the sharded model saved)."""

import logging
import os

import torch
from accelerate.utils import DistributedType

from .families import answer_no_input_embeddings, encoder_config, encoder_layer_classes
from .lora import is_lora, unwrap_lora

logger = logging.getLogger(__name__)


def only_real_norms() -> None:
    """accelerate's FSDP2 puts the base model's last child whose class name holds "Norm" with the output head in a
    group of its own, meaning the final layer norm of a language model; in wav2vec2-large-style models that child is
    the whole encoder (Wav2Vec2EncoderStableLayerNorm), whose input then becomes a hooked view it zeroes in place
    (failing backward at random). A norm layer has no sub-modules: anything else is not taken for one."""
    from accelerate.utils import fsdp_utils

    find = getattr(fsdp_utils, "_find_final_norm", None)
    if find is None or getattr(find, "real_norms_only", False):
        return

    def find_final_norm(model):
        norm = find(model)
        return norm if norm is not None and not any(True for _ in norm.children()) else None

    find_final_norm.real_norms_only = True
    fsdp_utils._find_final_norm = find_final_norm


def configure_distributed(model, training_args) -> None:
    """DDP, FSDP and activation-checkpointing settings the model needs, and one OpenMP thread per rank unless the
    user chose otherwise."""
    if training_args.world_size > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)  # N ranks x all cores each oversubscribes the CPU and slows every rank down
    plugin = training_args.fsdp_plugin_args
    if plugin and plugin.get("auto_wrap_policy") == "TRANSFORMER_BASED_WRAP" and not plugin.get(
            "transformer_cls_names_to_wrap"):  # FSDP shards each encoder layer on its own
        layers = encoder_layer_classes(unwrap_lora(model))
        answer_no_input_embeddings(unwrap_lora(model))  # accelerate's FSDP asks for them
        plugin["transformer_cls_names_to_wrap"] = ",".join(layers)
        training_args.fsdp_config["transformer_layer_cls_to_wrap"] = layers
        logger.info(f"FSDP: each encoder layer ({', '.join(layers)}) is wrapped and sharded on its own")
    if is_lora(model) and training_args.activation_checkpointing:
        # The frozen base gives the checkpointed layers inputs without gradients: re-entrant checkpointing would
        # then skip the adapters' backward (peft's usual cure, input embeddings requiring grads, has no speech twin)
        non_reentrant_checkpointing(training_args)
    if getattr(encoder_config(model.config), "layerdrop", 0) > 0:
        find_unused_parameters(training_args, "--layerdrop > 0")


def non_reentrant_checkpointing(training_args) -> None:
    training_args.activation_checkpointing_kwargs = {
        "use_reentrant": False, **(training_args.activation_checkpointing_kwargs or {})
    }


def find_unused_parameters(training_args, reason: str) -> None:
    """Some parameters get no gradient in some steps (a dropped layer, a frozen encoder): DDP's reducer must look for
    unused parameters, which re-entrant activation checkpointing does not support. The user's own choice stays."""
    if training_args.ddp_find_unused_parameters is not None:
        return
    training_args.ddp_find_unused_parameters = True
    if training_args.activation_checkpointing:
        non_reentrant_checkpointing(training_args)
    if training_args.world_size > 1:
        logger.info(f"DDP: {reason}, so ddp_find_unused_parameters=True (non-reentrant checkpointing)")


class CpuFsdp:
    """The Trainer's FSDP on CPU ranks (a mixin of trainer.CTCTrainer): accelerate turns FSDP on for accelerators
    only; this turns it on for CPU ranks too, and saves their sharded model (save_model calls save_cpu_fsdp_model)."""

    cpu_fsdp = False  # set when FSDP shards CPU ranks

    def create_accelerator_and_postprocess(self):
        if self.args.fsdp_plugin_args is not None:
            only_real_norms()
        super().create_accelerator_and_postprocess()
        state = self.accelerator.state
        if self.args.fsdp_plugin_args is not None and getattr(state, "fsdp_plugin", None) is None and \
                state.distributed_type == DistributedType.MULTI_CPU:
            # accelerate turns FSDP on for accelerators only and would train CPU ranks as DDP; torch's FSDP2 shards
            # over gloo as well (so CI tests real sharding, and CPU clusters can use it)
            from accelerate.utils import FullyShardedDataParallelPlugin

            state.distributed_type = DistributedType.FSDP
            state.fsdp_plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
            self.is_fsdp_enabled = self.cpu_fsdp = True
            logger.info("FSDP on CPU ranks: torch's FSDP2 shards the model over gloo (accelerate alone would train "
                        "them as DDP)")

    def save_cpu_fsdp_model(self, output_dir: str) -> None:
        """FSDP on CPU ranks: accelerate's full state dict points into storage FSDP frees again; gather each
        sharded weight into a tensor of its own (every rank takes part), and the main process saves the model."""
        from torch.distributed.tensor import DTensor

        state = {k: v.full_tensor() if isinstance(v, DTensor) else v.detach()
                 for k, v in self.model_wrapped.state_dict().items()}
        if self.args.should_save:
            self.accelerator.unwrap_model(self.model).save_pretrained(output_dir, state_dict=state)
            if self.processing_class is not None:
                self.processing_class.save_pretrained(output_dir)
        self.accelerator.wait_for_everyone()
