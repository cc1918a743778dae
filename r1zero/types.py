"""Shared data types and the shape glossary.

Shape glossary (used in every docstring and shape comment of the package):
    B  prompts in a step
    G  group_size: completions sampled per prompt
    N  = B * G completions in a step; rows of every per-completion tensor. Consecutive runs of G rows are one
       prompt's group (row i belongs to prompt i // G).
    T  tokens of the longest response in a (micro-)batch (padded); response_mask [N, T] marks real tokens
    P  prompt tokens
    V  vocabulary size
    H  hidden size

Data flow per step:
    tasks -> Prompt -> rollout.generate -> list[Completion] -> rewards.score -> rewards [N]
    -> algo.advantages -> learner batch -> learner.step -> sync.push (verified) -> logging
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Example:
    """One data row of a task, independent of any prompt template.

    question: the problem as shown to the model (no template), e.g. "Using the numbers [3, 5, 7], create ...".
    answer:   the gold answer as a string ("15", "\\frac{1}{2}"). For Countdown, the target.
    uid:      a stable identifier (task, source and row or seed/index); held-out splits are checked against it.
    meta:     task-specific fields the reward needs, e.g. {"numbers": [3, 5, 7], "target": 15}.
    """

    question: str
    answer: str
    uid: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Prompt:
    """A templated prompt ready for the rollout engine.

    text:    the full prompt string given to the engine (template applied).
    prefill: text the template already put at the start of the assistant's turn (e.g. "<think>"); the task
             re-attaches it in front of the generated text before scoring, so rewards see the full completion.
    example: the data row it was built from.
    """

    text: str
    example: Example
    prefill: str = ""


@dataclass
class Completion:
    """One sampled response, as returned by a rollout engine.

    prompt_index:     index of its prompt in the list passed to `generate` (row i of a step has prompt i // G).
    prompt_token_ids: [P] token ids of the prompt.
    token_ids:        [L] generated token ids (including the end-of-sequence token when one was produced).
    logprobs:         [L] per-token log-probabilities of the distribution sampled from (logits / temperature),
                      or None when the engine does not report them.
    text:             decoded generated text (special tokens removed).
    finish_reason:    "stop" (end-of-sequence or stop string) or "length" (hit max_tokens: truncated).
    policy_version:   the learner step whose weights produced this sample (0 = the initial model).
    """

    prompt_index: int
    prompt_token_ids: list[int]
    token_ids: list[int]
    logprobs: list[float] | None
    text: str
    finish_reason: str
    policy_version: int

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"
