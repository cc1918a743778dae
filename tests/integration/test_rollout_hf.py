"""HFEngine (transformers.generate) with the tiny model: the same generate contract as vLLM, scoring checked
by hand in float64, and weight updates. Also home of the helpers the vLLM and sync tests share (this module
needs no vllm)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from r1zero.config import RolloutConfig
from r1zero.rollout import SamplingSettings, build_engine, tokenize_prompts
from r1zero.types import Completion, Example, Prompt


def chat_prompt(question: str, uid: str) -> Prompt:
    text = f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    return Prompt(text=text, example=Example(question=question, answer="0", uid=uid))


PROMPTS = [
    chat_prompt("What is 2 + 3?", "a"),
    chat_prompt("Using the numbers [3, 5, 7], create an equation that equals 15.", "b"),
    chat_prompt("What is the sum of 12 and 30? Show your work.", "c"),
]


def check_contract(
    engine, prompts: Sequence[Prompt], rows: list[Completion], n: int, max_new_tokens: int
) -> None:
    """What every RolloutEngine.generate must return."""
    eos = engine.tokenizer.eos_token_id
    prompt_ids = tokenize_prompts(engine.tokenizer, prompts)
    assert len(rows) == len(prompts) * n
    for i, row in enumerate(rows):
        assert row.prompt_index == i // n  # prompt-major
        assert row.prompt_token_ids == prompt_ids[i // n]
        assert 1 <= len(row.token_ids) <= max_new_tokens
        assert row.logprobs is not None and len(row.logprobs) == len(row.token_ids)
        assert all(lp <= 1e-6 for lp in row.logprobs)
        # "stop" iff the sample ended with eos (kept in token_ids); "length" iff it used every token.
        assert (row.finish_reason == "stop") == (row.token_ids[-1] == eos)
        assert (row.finish_reason == "length") == (
            eos not in row.token_ids and len(row.token_ids) == max_new_tokens
        )
        assert eos not in row.token_ids[:-1]
        assert row.text == engine.tokenizer.decode(row.token_ids, skip_special_tokens=True)
        assert row.policy_version == engine.policy_version


@torch.no_grad()
def simulate_training_step(model: torch.nn.Module, tokenizer, seed: int, noise: float = 0.02) -> None:
    """Change every weight (Gaussian noise) and teach the model to stop: the eos embedding row (tied, so also
    the eos output row) is pointed along the mean final hidden state, which makes eos ~7% likely per token."""
    gen = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        param.add_(torch.randn(param.shape, generator=gen, dtype=param.dtype) * noise)
    ids = torch.tensor([tokenize_prompts(tokenizer, PROMPTS[:1])[0]])
    hidden = model(ids, output_hidden_states=True).hidden_states[-1][0].mean(0)  # [H], after the final norm
    model.get_input_embeddings().weight[tokenizer.eos_token_id] = 0.5 * hidden / hidden.norm()


@torch.no_grad()
def forward_logprobs(
    model: torch.nn.Module, probe: Sequence[tuple[list[int], list[int]]]
) -> list[torch.Tensor]:
    """The learner's side of the sync check: logprob of each response token, one forward per sequence."""
    out = []
    for prompt, response in probe:
        ids = torch.tensor([list(prompt) + list(response)])  # [1, P+L]
        logits = model(ids).logits[0, len(prompt) - 1 : -1].float()  # [L, V]
        out.append(torch.log_softmax(logits, -1).gather(1, torch.tensor(response)[:, None]).squeeze(1))  # [L]
    return out


@pytest.fixture(scope="module")
def engine(tiny_model_path: str):
    eng = build_engine(
        tiny_model_path, RolloutConfig(engine="hf", dtype="auto", max_prompt_tokens=64), seed=0
    )
    assert type(eng).__name__ == "HFEngine" and eng.model.dtype == torch.float32  # auto -> fp32 on CPU
    base = {k: v.clone() for k, v in eng.model.state_dict().items()}
    yield eng
    eng.model.load_state_dict(base)
    eng.close()


def test_generate_contract_reproducible_and_scored(engine) -> None:
    sampling = SamplingSettings(n=4, max_new_tokens=16, seed=3)
    rows = engine.generate(PROMPTS, sampling)
    check_contract(engine, PROMPTS, rows, 4, 16)
    assert [r.token_ids for r in engine.generate(PROMPTS, sampling)] == [r.token_ids for r in rows]
    scores = engine.score([(r.prompt_token_ids, r.token_ids) for r in rows])
    worst = max(abs(a - b) for r, s in zip(rows, scores) for a, b in zip(r.logprobs, s))
    assert worst < 1e-4, f"HF generate logprobs vs HF score differ by {worst}"


def test_score_matches_a_float64_forward_by_hand(engine, tiny_model_path: str) -> None:
    from transformers import AutoModelForCausalLM

    prompt, response = tokenize_prompts(engine.tokenizer, PROMPTS[:1])[0], [11, 250, 7]
    (scored,) = engine.score([(prompt, response)])
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float64)
    with torch.no_grad():
        logits = ref(torch.tensor([prompt + response])).logits[0]  # [P+L, V] float64
    for k, token in enumerate(response):
        row = logits[len(prompt) - 1 + k]  # predicts response[k]
        by_hand = float(row[token] - torch.logsumexp(row, 0))  # log softmax, written out
        assert scored[k] == pytest.approx(by_hand, abs=1e-5)


def test_update_weights_streams_into_the_model_and_stops_on_eos(engine, tiny_model_path: str) -> None:
    from transformers import AutoModelForCausalLM

    learner = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32)
    simulate_training_step(learner, engine.tokenizer, seed=1)
    engine.update_weights(((f"module.{n}", p) for n, p in learner.named_parameters()), 5)
    assert engine.policy_version == 5
    probe = [(tokenize_prompts(engine.tokenizer, PROMPTS[:1])[0], [11, 250, 7, 12])]
    (scored,) = engine.score(probe)
    assert scored == pytest.approx(forward_logprobs(learner, probe)[0].tolist(), abs=1e-5)
    # The "trained" model stops: some samples end on eos, and they say so.
    rows = engine.generate(PROMPTS, SamplingSettings(n=4, max_new_tokens=16, seed=0))
    check_contract(engine, PROMPTS, rows, 4, 16)
    assert any(r.finish_reason == "stop" for r in rows) and all(r.policy_version == 5 for r in rows)
    # A tied head may also be pushed under its own name; unknown names are an error.
    engine.update_weights([("lm_head.weight", learner.get_input_embeddings().weight)], 6)
    with pytest.raises(KeyError, match="not a parameter"):
        engine.update_weights([("model.nonexistent.weight", torch.zeros(1))], 7)


def test_generate_keeps_no_per_step_vocabulary_logits(engine, monkeypatch) -> None:
    """The chosen token's logprob is taken at each step (issue 34, item 12): what `model.generate` hands back
    holds the sequences and nothing of size [N, V] per step (output_logits kept T x [N, V] floats: ~40 GB for the
    3B recipe). Every tensor it returns, counted in bytes, is at most the sequences' size."""
    returned = []
    real = engine.model.generate

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        returned.append(out)
        return out

    monkeypatch.setattr(engine.model, "generate", spy)
    rows = engine.generate(PROMPTS, SamplingSettings(n=4, max_new_tokens=16, seed=3))
    check_contract(engine, PROMPTS, rows, 4, 16)
    (out,) = returned
    plain = isinstance(out, torch.Tensor)  # the sequences alone, or a ModelOutput of what was asked for
    sequences = out if plain else out.sequences
    held = [out] if plain else [value for value in out.values() if value is not None]
    tensors = [t for v in held for t in (v if isinstance(v, tuple) else (v,)) if isinstance(t, torch.Tensor)]
    assert sum(t.numel() * t.element_size() for t in tensors) <= sequences.numel() * sequences.element_size()


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(0.7, -1, 1.0), (1.0, 50, 0.9), (0.0, -1, 1.0)])
def test_generate_logprobs_match_a_float64_forward_and_the_tokens_plain_generate_samples(
    engine, temperature: float, top_k: int, top_p: float
) -> None:
    """Each chosen token's logprob is log_softmax(logits / T) of the sampled distribution before top-k/top-p
    (greedy: T = 1), checked against one forward pass over the whole sequence in float64; the tokens are those
    transformers' own `generate` samples from the same seed with the same settings."""
    from transformers import GenerationConfig

    n, new = (1 if temperature == 0 else 3), 24
    sampling = SamplingSettings(
        n=n, max_new_tokens=new, temperature=temperature, top_k=top_k, top_p=top_p, seed=11
    )
    rows = engine.generate(PROMPTS, sampling)
    check_contract(engine, PROMPTS, rows, n, new)
    scale = temperature if temperature > 0 else 1.0
    with torch.no_grad():
        for row in rows:
            ids = torch.tensor([row.prompt_token_ids + row.token_ids])  # [1, P+L]
            p = len(row.prompt_token_ids)
            logits = engine.model(ids).logits[0, p - 1 : -1].double() / scale  # [L, V] float64
            expected = (
                torch.log_softmax(logits, -1).gather(1, torch.tensor(row.token_ids)[:, None]).squeeze(1)
            )
            assert row.logprobs == pytest.approx(expected.tolist(), abs=1e-5)
    # plain transformers generate, same seed and settings: the same tokens (cut at eos as the engine cuts)
    prompt_ids = tokenize_prompts(engine.tokenizer, PROMPTS)
    width = max(len(r) for r in prompt_ids)
    input_ids = torch.tensor([[engine.pad_token_id] * (width - len(r)) + r for r in prompt_ids])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in prompt_ids])
    knobs = {"do_sample": False} if temperature == 0 else {
        "do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": max(top_k, 0),
    }  # fmt: skip
    config = GenerationConfig(**knobs, max_new_tokens=new, num_return_sequences=n,
                              eos_token_id=engine.eos_token_ids, pad_token_id=engine.pad_token_id)  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        plain = engine.model.generate(input_ids=input_ids, attention_mask=mask, generation_config=config)
    for row, tokens in zip(rows, plain[:, width:].tolist()):
        assert row.token_ids == tokens[: len(row.token_ids)]
        assert row.finish_reason == "stop" or len(tokens) == len(row.token_ids)
