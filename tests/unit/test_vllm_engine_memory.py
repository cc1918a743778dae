"""VLLMEngine's GPU memory decisions, checked against a fake `vllm.LLM` (vLLM's sleep mode needs CUDA; on CPU it
is off): which sleep level a step uses, in which order the weights and the KV cache come back around a push, and
what the constructor asks vLLM for by default on a GPU, on CPU and on a dedicated rollout worker.

Expected orders and values come from vLLM's own contract (vllm/entrypoints/llm.py `LLM.sleep`: level 1 offloads
the weights to host memory, level 2 discards them; `LLM.wake_up(tags)`: "weights" and "kv_cache" come back
separately, the engine schedules again only when both are back) and from the issue's defaults, not from the code.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from r1zero.rollout import vllm_engine
from r1zero.rollout.base import SamplingSettings
from r1zero.rollout.vllm_engine import VLLMEngine
from r1zero.types import Example, Prompt


class FakeLMHead(torch.nn.Module):
    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(4, 2))
        self.quant_method = types.SimpleNamespace(
            process_weights_after_loading=lambda layer: events.append("retie")
        )


class FakeModel(torch.nn.Module):
    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.model = torch.nn.Module()
        self.model.embed_tokens = torch.nn.Embedding(4, 2)
        self.lm_head = FakeLMHead(events)


class FakeWorker:
    """The in-process worker: reload_weights consumes the stream; `failing_layers` are the layers vLLM's
    layerwise reload reports as not loaded (it then puts the layer's previous tensors back)."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.failing_layers: list[str] = []
        model = FakeModel(events)
        self.model_runner = types.SimpleNamespace(get_model=lambda: model)

    def reload_weights(self, weights_iterator: Iterator[tuple[str, torch.Tensor]]) -> None:
        names = [name for name, _ in weights_iterator]
        self.events.append(f"reload {len(names)}")
        for layer in self.failing_layers:
            logging.getLogger(vllm_engine._RELOAD_LOGGER).warning("%s: Failed to load weights", layer)


class FakeLLM:
    """Records the constructor kwargs and every memory call; refuses work while any memory is asleep, as vLLM's
    paused scheduler would never run it."""

    last: FakeLLM | None = None

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.events: list[str] = []
        self.asleep: set[str] = set()
        worker = FakeWorker(self.events)
        self.worker = worker
        self.llm_engine = types.SimpleNamespace(
            model_executor=types.SimpleNamespace(driver_worker=types.SimpleNamespace(worker=worker))
        )
        FakeLLM.last = self

    def sleep(self, level: int = 1) -> None:
        self.events.append(f"sleep {level}")
        self.asleep = {"weights", "kv_cache"}

    def wake_up(self, tags: list[str] | None = None) -> bool:
        self.events.append(f"wake {tags}")
        self.asleep -= set(tags) if tags is not None else set(self.asleep)
        return not self.asleep

    def reset_prefix_cache(self) -> bool:
        self.events.append("reset_prefix_cache")
        return True

    def generate(self, requests: list[dict[str, Any]], params: list[Any] | Any, use_tqdm: bool) -> list[Any]:
        assert not self.asleep, f"vLLM asked to run while {sorted(self.asleep)} sleep"
        self.events.append("generate")
        outputs = []
        for request in requests:
            ids = request["prompt_token_ids"]
            logprobs = [None] + [{t: types.SimpleNamespace(logprob=-1.0)} for t in ids[1:]]
            sample = types.SimpleNamespace(
                index=0,
                token_ids=[1],
                finish_reason="length",
                logprobs=[{1: types.SimpleNamespace(logprob=-1.0)}],
            )
            outputs.append(types.SimpleNamespace(prompt_logprobs=logprobs, outputs=[sample]))
        return outputs


def _fake_vllm() -> Any:
    return types.SimpleNamespace(LLM=FakeLLM, SamplingParams=lambda **kw: types.SimpleNamespace(**kw))


@pytest.fixture
def on_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine believes it runs on CUDA (the only place vLLM's sleep mode works)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    # The real context forks the CUDA RNG of the current device; there is none here.
    monkeypatch.setattr(vllm_engine, "_preserve_global_rng", lambda on_cuda: _nothing())


@pytest.fixture(autouse=True)
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_engine, "_import_vllm", _fake_vllm)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _engine(model_path: str, tied: bool = True, **kwargs: Any) -> tuple[VLLMEngine, FakeLLM]:
    engine = VLLMEngine(model_path, max_prompt_tokens=16, max_new_tokens=4, **kwargs)
    engine.tied_embeddings = tied  # the tiny model's own setting does not matter to these decisions
    assert FakeLLM.last is not None
    return engine, FakeLLM.last


WEIGHTS = [("model.embed_tokens.weight", torch.ones(4, 2)), ("model.norm.weight", torch.ones(2))]


# ---- item 13: the sleep level ---------------------------------------------------------------------------------


def test_a_step_discards_the_weights_and_refills_them_before_the_kv_cache(
    tiny_model_path: str, on_gpu
) -> None:
    """Level 2 (the next push overwrites every weight, so keeping a host copy is wasted work); on waking, the
    weights' memory first, then the push into it, the tied head re-tied (level 2 left it no old values), then the
    KV cache, then the prefix cache dropped: after that the engine can score the verification probe."""
    engine, llm = _engine(tiny_model_path)
    engine.sleep()
    engine.wake()
    engine.update_weights(iter(WEIGHTS), version=1)
    assert llm.events == [
        "sleep 2",
        "wake ['weights']",
        "reload 2",
        "retie",
        "wake ['kv_cache']",
        "reset_prefix_cache",
    ]
    assert engine.score([([1, 2], [3])]) == [[-1.0]]  # the verified sync's probe runs after the push
    assert engine.policy_version == 1


def test_after_a_level_2_sleep_nothing_runs_before_the_push(tiny_model_path: str, on_gpu) -> None:
    """The discarded weights hold garbage until the push: sampling or scoring them is refused by name."""
    engine, llm = _engine(tiny_model_path)
    engine.sleep()
    with pytest.raises(RuntimeError, match="asleep"):
        engine.update_weights(iter(WEIGHTS), version=1)  # no memory to load into yet
    engine.wake()
    prompts = [Prompt(text="a b", example=Example(question="a b", answer="0", uid="q0"))]
    with pytest.raises(RuntimeError, match="push"):
        engine.generate(prompts, SamplingSettings(n=2, max_new_tokens=1, seed=0))
    with pytest.raises(RuntimeError, match="push"):
        engine.score([([1, 2], [3])])
    assert "generate" not in llm.events


def test_a_partial_push_after_level_2_is_refused(tiny_model_path: str, on_gpu) -> None:
    """A layer the push did not reach keeps what vLLM puts back, which after level 2 is discarded memory: an
    error naming the layer, not a silently broken policy."""
    engine, llm = _engine(tiny_model_path)
    llm.worker.failing_layers = ["Qwen2MLP"]
    engine.sleep()
    engine.wake()
    with pytest.raises(RuntimeError, match="Qwen2MLP"):
        engine.update_weights(iter(WEIGHTS), version=1)


def test_on_cpu_sleep_and_wake_do_nothing(tiny_model_path: str) -> None:
    """vLLM's sleep mode needs CUDA: on CPU the engine never calls it."""
    engine, llm = _engine(tiny_model_path)
    engine.sleep()
    engine.wake()
    engine.update_weights(iter(WEIGHTS), version=1)
    assert llm.events == ["reload 2", "retie", "reset_prefix_cache"]


# ---- item 17: the constructor's defaults ----------------------------------------------------------------------


def _memory_settings(llm: FakeLLM) -> tuple[object, object, object]:
    """(enforce_eager, gpu_memory_utilization, enable_sleep_mode) as the engine passed them to vLLM."""
    return tuple(llm.kwargs[k] for k in ("enforce_eager", "gpu_memory_utilization", "enable_sleep_mode"))  # type: ignore[return-value]


def test_on_a_gpu_the_defaults_capture_cuda_graphs_and_share_the_gpu(tiny_model_path: str, on_gpu) -> None:
    """Colocated on a GPU: CUDA graphs (enforce_eager False), 35% of the GPU for vLLM, sleep mode on."""
    _, llm = _engine(tiny_model_path)
    assert _memory_settings(llm) == (False, 0.35, True)


def test_on_cpu_the_defaults_stay_eager(tiny_model_path: str) -> None:
    """The CPU default run's engine is what it was: eager, no GPU memory settings, CPU scheduler settings."""
    _, llm = _engine(tiny_model_path)
    assert llm.kwargs["enforce_eager"] is True
    assert "gpu_memory_utilization" not in llm.kwargs and "enable_sleep_mode" not in llm.kwargs
    assert llm.kwargs["enable_chunked_prefill"] is False


def test_explicit_settings_win_over_the_defaults(tiny_model_path: str, on_gpu) -> None:
    engine, llm = _engine(
        tiny_model_path, enforce_eager=True, gpu_memory_utilization=0.5, enable_sleep_mode=False
    )
    assert _memory_settings(llm) == (True, 0.5, False)
    engine.sleep()  # sleep mode off: nothing to release
    assert llm.events == []


def test_a_dedicated_worker_config_owns_its_gpu(tiny_model_path: str, on_gpu) -> None:
    """A disaggregated run's rollout config (its engines are all workers with a GPU of their own) asks vLLM for
    90% of the GPU (vLLM's own default) and no sleep mode (nothing ever takes the memory back)."""
    from r1zero.config import RolesConfig, RunConfig

    cfg = RunConfig(roles=RolesConfig(mode="disaggregated", max_staleness=0))
    engine = VLLMEngine.from_config(tiny_model_path, cfg.rollout, seed=0)
    llm = FakeLLM.last
    assert llm is not None
    assert _memory_settings(llm) == (False, 0.9, False)
    engine.sleep()
    assert llm.events == []
