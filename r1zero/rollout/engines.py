"""The rollout-engine registry: `rollout.engine` names a factory here, and `build_engine` calls it.

Its own module, apart from the contract in `base.py` that the engines implement: the registry imports each engine
(lazily: vllm is optional), and the engines import `base`, so with both in one module each would import the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from r1zero.config import RolloutConfig
from r1zero.rollout.base import RolloutEngine

EngineFactory = Callable[..., RolloutEngine]  # (model_path, cfg, seed, **engine_kwargs) -> engine


def _vllm_factory(model_path: str, cfg: RolloutConfig, seed: int, **engine_kwargs: Any) -> RolloutEngine:
    from r1zero.rollout.vllm_engine import VLLMEngine

    return VLLMEngine.from_config(model_path, cfg, seed=seed, **engine_kwargs)


def _hf_factory(model_path: str, cfg: RolloutConfig, seed: int, **engine_kwargs: Any) -> RolloutEngine:
    from r1zero.rollout.hf_engine import HFEngine

    return HFEngine.from_config(model_path, cfg, seed=seed, **engine_kwargs)


# Keyed by RolloutConfig.engine; the factories import their backend lazily (vllm is optional).
ENGINES: dict[str, EngineFactory] = {"vllm": _vllm_factory, "hf": _hf_factory}


def build_engine(model_path: str, cfg: RolloutConfig, *, seed: int, **engine_kwargs: Any) -> RolloutEngine:
    """The rollout engine named by `cfg.engine`, loaded from `model_path` (a folder or hub id).

    engine_kwargs go to the engine's constructor, e.g. trust_remote_code=cfg.model.trust_remote_code.
    """
    try:
        factory = ENGINES[cfg.engine]
    except KeyError:
        raise ValueError(f"rollout.engine must be one of {', '.join(ENGINES)}; got {cfg.engine!r}") from None
    return factory(model_path, cfg, seed, **engine_kwargs)
