# Copyright 2026 The CTC fine-tuning tool authors. Licensed under the Apache License, Version 2.0.
"""What goes wrong in a run and how it ends: user errors as one line, stop signals (a checkpoint, then exit
REQUEUE_EXIT), and full disks. The recipe's command line and every step use it."""

import errno
import logging
import os
import shutil
import signal
import sys
import threading

import torch
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

USER_ERROR_EXIT = 2  # exit status of a user mistake (a flag, a file, the data), in every command: argparse's own
INTERRUPTED_EXIT = 130  # exit status after a second Ctrl-C: the shell's for SIGINT
REQUEUE_EXIT = 75  # exit status of a run a signal stopped at a checkpoint: sysexits' EX_TEMPFAIL, "run it again"
STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")  # schedulers' preemption warnings, and Ctrl-C (a second one: at once)


class UserError(Exception):
    """A mistake in the arguments or the data: reported as one line, without a traceback."""


def exit_on_user_error(error: Exception) -> None:
    """End a command on a user mistake: one `error:` line on stderr and USER_ERROR_EXIT; CTC_DEBUG=1 re-raises it,
    for the traceback."""
    if os.environ.get("CTC_DEBUG"):
        raise error
    print(f"error: {error}", file=sys.stderr)
    sys.exit(USER_ERROR_EXIT)


def check_output_parent(flag: str, path) -> None:
    """A command's output path (--output, --segment): its folder must exist, or the run would fail at its end."""
    parent = os.path.dirname(os.path.abspath(str(path).rstrip("/"))) if path else None
    if parent and not os.path.isdir(parent):
        raise UserError(f"{flag} {path}: the directory {parent} does not exist; create it (mkdir -p {parent}) or "
                        "pick another path.")


def run_command(main) -> None:
    """Run a command's main() (transcribe.py, export_onnx.py): its log lines on stderr without progress bars, and a
    user mistake ended by exit_on_user_error."""
    import transformers

    logging.basicConfig(format="%(message)s", level=logging.INFO, stream=sys.stderr)
    transformers.utils.logging.disable_progress_bar()  # stderr carries only our lines and real warnings
    try:
        main()
    except UserError as e:
        exit_on_user_error(e)


class Stopped(Exception):
    """A stop signal ended the run cleanly (in training: at a saved checkpoint). One line; exit status REQUEUE_EXIT."""


class DiskFull(UserError):
    """No space left on the device while writing `what`: one line with the space needed and free there."""

    def __init__(self, what: str, path: str, needed_bytes: float, fix: str):
        directory = path
        while directory and not os.path.isdir(directory):
            directory = os.path.dirname(directory)
        free = shutil.disk_usage(directory or ".").free
        super().__init__(f"no space left on device writing {what} {path}: about {needed_bytes / 1e6:,.0f} MB needed, "
                         f"{free / 1e6:,.0f} MB free there; {fix}.")


def is_disk_full(error: BaseException) -> bool:
    """Whether a writer's exception (Python, Arrow, safetensors or torch.save) means that the disk is full."""
    text = str(error)
    return (getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in text
            or "StorageFull" in text or "PytorchStreamWriter failed writing file" in text)


class StopOnSignal(TrainerCallback):
    """SIGTERM, SIGUSR1 (SLURM's warning before a time limit) or a first Ctrl-C. During training: finish the step,
    save a checkpoint and stop, every process at the same step (they agree at each step's end). Outside training:
    stop at once (datasets removes a cache file it was writing). A second Ctrl-C stops at once anywhere.

    A context manager: installs its handlers on entry, puts the previous ones back on exit."""

    def __init__(self):
        self.received, self.training, self.phase, self.previous = None, False, "preparing the run", {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # only the main thread may handle signals
            for name in STOP_SIGNALS:
                self.previous[name] = signal.signal(getattr(signal, name), self.handle)
        return self

    def __exit__(self, *exc_info):
        for name, handler in self.previous.items():
            signal.signal(getattr(signal, name), handler)

    def handle(self, signum, frame):
        name = signal.Signals(signum).name
        if name == "SIGINT" and self.received == "SIGINT":
            raise KeyboardInterrupt
        if not self.training:
            raise Stopped(f"stopped by {name} while {self.phase}; nothing half-written is kept: run the same command "
                          "again to start over")
        if self.received is None:
            self.received = name
            logger.warning(f"Received {name}: stopping after this training step, with a checkpoint")

    def on_train_begin(self, args, state, control, **kwargs):
        self.training = True

    def on_train_end(self, args, state, control, **kwargs):
        self.training, self.phase = False, "evaluating"

    def on_step_end(self, args, state, control, **kwargs):
        number = getattr(signal, self.received) if self.received else 0
        if torch.distributed.is_available() and torch.distributed.is_initialized():  # a signal to any process counts
            flag = torch.tensor([int(number)], device=args.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            number = int(flag.item())
        if number:
            self.received = signal.Signals(number).name
            control.should_save = control.should_training_stop = True
