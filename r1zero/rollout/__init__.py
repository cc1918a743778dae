"""Rollout engines: sample completions from the current policy (vLLM, or transformers as a fallback).

`build_engine(model_path, cfg.rollout, seed=...)` picks the engine by `rollout.engine`; both implement the
`RolloutEngine` protocol in `base.py` (the registry: `engines.py`). Importing this package does not import vllm.
"""

from r1zero.rollout.base import RolloutEngine, SamplingSettings, TokenPair, tokenize_prompts
from r1zero.rollout.engines import ENGINES, build_engine

__all__ = ["ENGINES", "RolloutEngine", "SamplingSettings", "TokenPair", "build_engine", "tokenize_prompts"]
