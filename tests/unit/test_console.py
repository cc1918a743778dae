"""The console filter: the measured noise is dropped, r1zero's lines and every error are kept, unknown warnings
are kept."""

from __future__ import annotations

import logging

from r1zero.console import is_noise


def record(name: str, level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


def test_measured_noise_is_dropped() -> None:
    lines = [  # seen on the console of a CPU default run (2026-11-30)
        ("vllm.v1.worker.cpu_worker", "libtcmalloc is not found in LD_PRELOAD. For best performance, ..."),
        ("vllm.v1.worker.cpu_worker", "CPU backend doesn't allow to use `torch.set_num_threads` after the "
         "thread binding, skip it."),
        ("vllm.platforms.cpu", "Triton is not installed. triton-cpu is expected on x86 CPUs."),
        ("vllm.config.vllm", "Enforce eager set, disabling torch.compile, CUDAGraphs, and JIT kernel warmup."),
        ("vllm.engine.arg_utils", "The global random seed is set to 0. Since VLLM_ENABLE_V1_MULTIPROCESSING ..."),
        ("py.warnings", "dispatcher.py:139: FutureWarning: `torch.distributed.reduce_op` is deprecated, ..."),
        ("transformers.modeling_utils", "`torch_dtype` is deprecated! Use `dtype` instead!"),
    ]  # fmt: skip
    for name, message in lines:
        assert is_noise(record(name, logging.WARNING, message)), message
    assert is_noise(record("root", logging.INFO, "gcc -Wsign-compare -DNDEBUG -g -fwrapv -O3 -c test.c"))
    assert is_noise(
        record("vllm.v1.engine.core", logging.INFO, "init engine (profile, create kv cache) took 1 s")
    )


def test_what_matters_is_kept() -> None:
    assert not is_noise(record("r1zero.logging", logging.INFO, "step 3/60 | reward 0.28 | 7.5 s/step"))
    assert not is_noise(record("r1zero", logging.WARNING, "Triton is not installed"))  # r1zero's own: always
    assert not is_noise(record("vllm.v1.engine", logging.ERROR, "libtcmalloc is not found in LD_PRELOAD"))
    assert not is_noise(record("vllm.v1.core.kv_cache_utils", logging.WARNING, "Not enough KV cache space"))
    assert not is_noise(record("py.warnings", logging.WARNING, "UserWarning: something new"))
