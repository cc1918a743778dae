"""format_reward, answer_tag_reward, extract_answer: hand-checked cases, one reason per line."""

import pytest

from r1zero.rewards.format import answer_tag_reward, extract_answer, format_reward

GOOD = "<think> 2 + 2 is 4 </think> <answer> 4 </answer>"


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (GOOD, 1.0),
        ("\n  " + GOOD + "\n\n", 1.0),  # leading and trailing whitespace are allowed
        ("<think>a</think><answer>4</answer>", 1.0),  # no whitespace between the blocks is fine
        ("<think>a</think>\n\n<answer>4</answer>", 1.0),  # newlines between the blocks are whitespace
        (
            "<think></think><answer></answer>",
            1.0,
        ),  # empty blocks still have the format (correctness is elsewhere)
        ("Sure! " + GOOD, 0.0),  # text before the think block
        ("<think>a</think> so <answer>4</answer>", 0.0),  # text between the blocks
        (GOOD + " done", 0.0),  # text after the answer block
        ("<answer>4</answer><think>a</think>", 0.0),  # answer before think
        ("<think>a <answer>4</answer></think>", 0.0),  # answer inside think
        ("<think>a</think> <answer>4</answer></answer>", 0.0),  # repeated </answer>
        ("<think>a</think> <answer>4</answer> <answer>5</answer>", 0.0),  # two answer blocks
        ("<think>a <think>b</think></think> <answer>4</answer>", 0.0),  # nested think
        ("<think>a</think> <think>b</think> <answer>4</answer>", 0.0),  # two think blocks
        ("<think>a <answer> is a tag</think> <answer>4</answer>", 0.0),  # stray answer tag inside think
        ("<think>a</think>", 0.0),  # no answer block
        ("<answer>4</answer>", 0.0),  # no think block
        ("<think>a</think> <answer>4", 0.0),  # unclosed answer
        ("<THINK>a</THINK> <ANSWER>4</ANSWER>", 0.0),  # tags are case-sensitive
        ("", 0.0),
    ],
)
def test_format_reward(completion: str, expected: float) -> None:
    assert format_reward(completion) == expected


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<answer>4</answer>", 1.0),
        ("The sum is 4. <answer>4</answer> Done.", 1.0),  # free text around the block is allowed
        (GOOD, 1.0),
        ("<answer>4</answer></answer>", 0.0),  # repeated closing tag
        ("<answer><answer>4</answer>", 0.0),  # repeated opening tag
        ("<answer>4</answer><answer>5</answer>", 0.0),  # two blocks
        ("</answer>4<answer>", 0.0),  # closing before opening
        ("answer: 4", 0.0),
    ],
)
def test_answer_tag_reward(completion: str, expected: float) -> None:
    assert answer_tag_reward(completion) == expected


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (GOOD, "4"),  # stripped
        ("x <answer>\n(1 + 2) * 3\n</answer> y", "(1 + 2) * 3"),
        ("<answer></answer>", ""),
        ("<answer>4</answer></answer>", None),
        ("<answer><answer>4</answer></answer>", None),  # nested
        ("<answer>4</answer> <answer>4</answer>", None),
        ("no tags", None),
    ],
)
def test_extract_answer(completion: str, expected: str | None) -> None:
    assert extract_answer(completion) == expected


def test_non_string_input_scores_zero() -> None:
    # A caller bug (None instead of text) must not crash the reward: it scores 0.0 / None.
    assert format_reward(None) == 0.0  # type: ignore[arg-type]
    assert answer_tag_reward(b"<answer>4</answer>") == 0.0  # type: ignore[arg-type]
    assert extract_answer(None) is None  # type: ignore[arg-type]
