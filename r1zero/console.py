"""Keep the console for what a user needs; send library chatter to the run's log file only.

A CPU default run printed ~25 lines from vLLM, torch, transformers and DeepSpeed that say nothing to a user of
r1zero (tcmalloc / libiomp not preloaded, `set_num_threads` skipped once per engine wake-up, Triton missing on a
CPU, a FutureWarning inside vLLM, DeepSpeed compiling a libaio probe, ...). `quiet_console()` attaches a filter to
the console handlers that drops exactly those (NOISE, matched on the message), and INFO chatter of other
libraries; everything still reaches the run's log file (Hydra's `<run_dir>/<job>.log`), and any warning not
listed here still reaches the console. `R1ZERO_VERBOSE=1` turns the filter off.
"""

from __future__ import annotations

import logging
import os
import re

# Messages known to carry no information for an r1zero user, with why.
NOISE: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p)
    for p in (
        r"libtcmalloc is not found in LD_PRELOAD",  # vLLM CPU performance hint; measured: no gain here
        r"libiomp is not found in LD_PRELOAD",  # same
        r"doesn't allow to use `torch\.set_num_threads` after the thread binding",  # once per engine wake-up
        r"Triton is not installed|Triton not (available|installed)|requires Triton",  # there is no Triton on CPU
        r"Enforce eager set, disabling torch\.compile",  # r1zero chose eager (weight reloads)
        r"Inductor compilation was disabled by user settings",  # same
        r"Reset SSM cache type to float32",  # no SSM layers in these models
        r"The global random seed is set to \d+",  # r1zero seeds every request itself
        r"`torch_dtype` is deprecated",  # inside a library call, not the user's
        r"`torch\.distributed\.reduce_op` is deprecated",  # FutureWarning inside vLLM
        r"^gcc ",  # DeepSpeed's libaio probe compiles a test program
    )
)
# Loggers whose INFO records stay off the console (their warnings and errors still show).
CHATTY = ("vllm", "torch", "transformers", "deepspeed", "DeepSpeed", "datasets", "root", "py.warnings")


def is_noise(record: logging.LogRecord) -> bool:
    """True for a record the console should not show. Example: a vLLM WARNING "libtcmalloc is not found in
    LD_PRELOAD..." -> True; an r1zero INFO "step 3/60 | ..." -> False; a vLLM ERROR -> False."""
    if record.levelno >= logging.ERROR or record.name.startswith("r1zero"):
        return False
    if record.levelno < logging.WARNING and record.name.split(".")[0] in CHATTY:
        return True
    message = record.getMessage()
    return any(p.search(message) for p in NOISE)


class DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not is_noise(record)


def quiet_console() -> None:
    """Route library logs through the root logger (so the run's log file gets them) and filter the console's
    handlers. Called by each entry point once Hydra has configured logging; idempotent."""
    if os.environ.get("R1ZERO_VERBOSE", "0") not in ("", "0"):
        return
    logging.captureWarnings(
        True
    )  # Python warnings become "py.warnings" records: file yes, console if not noise
    import torch  # noqa: F401  (torch's logging installs its console handler on import: let it, then remove it)

    for name in ("vllm", "DeepSpeed", "torch"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if _is_console(handler):
                logger.removeHandler(handler)  # the record goes on to root's handlers (console + file)
        logger.propagate = True
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_default_handler()
        hf_logging.enable_propagation()
    except ImportError:
        pass
    for handler in logging.getLogger().handlers:
        if _is_console(handler) and not any(isinstance(f, DropNoise) for f in handler.filters):
            handler.addFilter(DropNoise())


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
