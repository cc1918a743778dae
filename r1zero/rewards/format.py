"""Format rewards and answer extraction: strings in, floats out.

Every function here is linear in the completion length (`str.count` / `str.find`, no regular expression), never
raises on any string, and treats tags as exact, case-sensitive literals: `<think>`, `</think>`, `<answer>`,
`</answer>`. "Exactly one block" means each of the two tags of the block occurs exactly once, opening before
closing, so nested, repeated or stray tags anywhere make the structure invalid.

The correctness rewards (countdown, math) read the answer through `extract_answer` only; whether that block sits
in the right place relative to `<think>` is the format reward's job, as in TinyZero and Dr. GRPO.
"""

from __future__ import annotations

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"


def _single_block(text: str, open_tag: str, close_tag: str) -> tuple[int, int] | None:
    """(start, end) of the one `open...close` block, or None if either tag is absent, repeated or out of order.

    start is the index of the open tag, end the index just past the close tag.
    `_single_block("a<answer>1</answer>", "<answer>", "</answer>") -> (1, 18)`.
    """
    if not isinstance(text, str):
        return None
    if text.count(open_tag) != 1 or text.count(close_tag) != 1:
        return None
    start, close = text.find(open_tag), text.find(close_tag)
    if close < start + len(open_tag):
        return None
    return start, close + len(close_tag)


def extract_answer(completion: str) -> str | None:
    """The stripped content of the single `<answer>...</answer>` block, else None.

    `extract_answer("<think>x</think> <answer> 42 </answer>") -> "42"`;
    two blocks, a repeated `</answer>` or a nested `<answer>` -> None. An empty block gives "".
    """
    span = _single_block(completion, ANSWER_OPEN, ANSWER_CLOSE)
    if span is None:
        return None
    start, end = span
    return completion[start + len(ANSWER_OPEN) : end - len(ANSWER_CLOSE)].strip()


def answer_tag_reward(completion: str) -> float:
    """1.0 iff there is exactly one well-formed `<answer>...</answer>` block (text around it is free), else 0.0.

    For chat-template prompts that carry no think block: `answer_tag_reward("so 3 <answer>3</answer>") -> 1.0`,
    `answer_tag_reward("<answer>3</answer><answer>4</answer>") -> 0.0`.
    """
    return 1.0 if _single_block(completion, ANSWER_OPEN, ANSWER_CLOSE) is not None else 0.0


def format_reward(completion: str) -> float:
    """1.0 iff the completion is `<think>...</think>` then `<answer>...</answer>`, whitespace only around them.

    Leading whitespace, whitespace between the blocks and trailing whitespace are allowed; anything else outside
    the two blocks, or any repeated or nested think/answer tag, gives 0.0 (the DeepSeek R1-Zero format).
    `format_reward("<think> 2+2 </think>\\n<answer>4</answer>\\n") -> 1.0`;
    `format_reward("<think>a</think> so <answer>4</answer>") -> 0.0` (text between the blocks).
    """
    think = _single_block(completion, THINK_OPEN, THINK_CLOSE)
    answer = _single_block(completion, ANSWER_OPEN, ANSWER_CLOSE)
    if think is None or answer is None:
        return 0.0
    (think_start, think_end), (answer_start, answer_end) = think, answer
    if think_end > answer_start:  # the answer block opens inside (or before) the think block
        return 0.0
    outside = completion[:think_start] + completion[think_end:answer_start] + completion[answer_end:]
    return 1.0 if outside.strip() == "" else 0.0
