"""Prompt templates: Example -> Prompt.

"r1zero": the DeepSeek R1-Zero template (DeepSeek-R1 paper, Table 1), for base models. The prompt ends with the
    prefill "<think>", so the model starts inside its reasoning block and the reward sees "<think>" + generation.
"chat": the tokenizer's own chat template (instruct models), with an optional system message and few-shot
    user/assistant turns before the question; no prefill unless one is given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from r1zero.config import TaskConfig
from r1zero.types import Example, Prompt

R1ZERO_SYSTEM = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with the "
    "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>."
)
R1ZERO_PREFILL = "<think>"


def r1zero_prompt(
    example: Example,
    *,
    tokenizer: Any = None,
    system_prompt: str | None = None,
    fewshot: Sequence[tuple[str, str]] = (),
    prefill: str | None = None,
) -> Prompt:
    """`{system} User: {question} Assistant: <think>`; few-shot pairs become earlier `User: q Assistant: a` turns.

    system_prompt replaces the R1-Zero preamble; the tokenizer is not used (the template is plain text).
    """
    prefill = R1ZERO_PREFILL if prefill is None else prefill
    system = R1ZERO_SYSTEM if system_prompt is None else system_prompt
    turns = "".join(f" User: {q} Assistant: {a}" for q, a in fewshot)
    text = f"{system}{turns} User: {example.question} Assistant: {prefill}"
    return Prompt(text=text, example=example, prefill=prefill)


def chat_prompt(
    example: Example,
    *,
    tokenizer: Any = None,
    system_prompt: str | None = None,
    fewshot: Sequence[tuple[str, str]] = (),
    prefill: str | None = None,
) -> Prompt:
    """The tokenizer's chat template over [system?, (user q, assistant a)*, user question], generation prompt on."""
    if tokenizer is None or not hasattr(tokenizer, "apply_chat_template"):
        raise ValueError("template 'chat' needs a tokenizer with apply_chat_template (pass tokenizer=...)")
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for question, answer in fewshot:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": example.question})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prefill = prefill or ""
    return Prompt(text=text + prefill, example=example, prefill=prefill)


TEMPLATES: dict[str, Callable[..., Prompt]] = {"r1zero": r1zero_prompt, "chat": chat_prompt}


def build_prompt(
    example: Example,
    *,
    template: str,
    tokenizer: Any = None,
    system_prompt: str | None = None,
    fewshot: Sequence[tuple[str, str]] = (),
    prefill: str | None = None,
) -> Prompt:
    """Apply `template` ("r1zero" or "chat") to one example.

    `build_prompt(Example("What is 2 + 3?", "5", "u"), template="r1zero").text` ends with
    `"User: What is 2 + 3? Assistant: <think>"`, and its `.prefill == "<think>"`.
    prefill None takes the template's default ("<think>" for r1zero, "" for chat).
    """
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; known: {sorted(TEMPLATES)}")
    return TEMPLATES[template](
        example, tokenizer=tokenizer, system_prompt=system_prompt, fewshot=fewshot, prefill=prefill
    )


def build_prompts(examples: Sequence[Example], task: TaskConfig, tokenizer: Any) -> list[Prompt]:
    """Examples -> prompts as the task config says (template, system prompt, few-shot turns): the one place
    training, evaluation and the benchmark build prompts, so they all see the same text."""
    fewshot = [(turn[0], turn[1]) for turn in task.fewshot]
    return [
        build_prompt(
            e, template=task.template, tokenizer=tokenizer, system_prompt=task.system_prompt, fewshot=fewshot
        )
        for e in examples
    ]
