"""build_prompt: the R1-Zero template text and prefill, and the chat template call."""

import pytest

from r1zero.tasks.templates import R1ZERO_SYSTEM, build_prompt
from r1zero.types import Example

EX = Example(question="What is 2 + 3?", answer="5", uid="t/0")


def test_r1zero_template_exact_text() -> None:
    prompt = build_prompt(EX, template="r1zero")
    assert prompt.text == (
        "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
        "The assistant first thinks about the reasoning process in the mind and then provides the user with the "
        "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> "
        "tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>. "
        "User: What is 2 + 3? Assistant: <think>"
    )
    assert prompt.prefill == "<think>" and prompt.text.endswith(prompt.prefill)
    assert prompt.example is EX


def test_r1zero_fewshot_and_system_override() -> None:
    prompt = build_prompt(
        EX, template="r1zero", system_prompt="SYS.", fewshot=[("1+1?", "<answer>2</answer>")]
    )
    assert (
        prompt.text == "SYS. User: 1+1? Assistant: <answer>2</answer> User: What is 2 + 3? Assistant: <think>"
    )
    assert R1ZERO_SYSTEM not in prompt.text


class FakeTokenizer:
    """Records the call; renders messages as `<|role|>content` lines plus a generation prompt."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[dict], dict]] = []

    def apply_chat_template(self, messages, **kwargs):
        self.calls.append((messages, kwargs))
        body = "".join(f"<|{m['role']}|>{m['content']}\n" for m in messages)
        return body + ("<|assistant|>" if kwargs.get("add_generation_prompt") else "")


def test_chat_template_messages_and_prefill() -> None:
    tok = FakeTokenizer()
    prompt = build_prompt(
        EX,
        template="chat",
        tokenizer=tok,
        system_prompt="Answer in <answer></answer> tags.",
        fewshot=[("What is 12 + 9?", "12 + 9 = 21 <answer>21</answer>")],
    )
    messages, kwargs = tok.calls[0]
    assert kwargs == {"tokenize": False, "add_generation_prompt": True}
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[-1]["content"] == "What is 2 + 3?"
    assert prompt.text.endswith("<|user|>What is 2 + 3?\n<|assistant|>")
    assert prompt.prefill == ""
    # A configurable prefill is appended after the generation prompt and recorded.
    prompt = build_prompt(EX, template="chat", tokenizer=tok, prefill="<answer>")
    assert prompt.text.endswith("<|assistant|><answer>") and prompt.prefill == "<answer>"
    assert [m["role"] for m in tok.calls[-1][0]] == ["user"]  # no system message when none is given


def test_chat_needs_a_tokenizer_and_unknown_template_raises() -> None:
    with pytest.raises(ValueError, match="tokenizer"):
        build_prompt(EX, template="chat")
    with pytest.raises(ValueError, match="unknown template"):
        build_prompt(EX, template="r1")
