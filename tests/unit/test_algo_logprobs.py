"""r1zero.algo.logprobs: chunked log-probs / entropy from hidden states equal the naive float64 computation, and
save little."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

import r1zero.algo.logprobs as logprobs_module
from r1zero.algo import hidden_to_logprobs

F64 = torch.float64


def naive_logprobs(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Reference: full float64 log_softmax then gather. [..., V], [...] -> [...]."""
    log_p = torch.log_softmax(logits.double() / temperature, dim=-1)  # [..., V]
    return log_p.gather(-1, labels.unsqueeze(-1)).squeeze(-1)  # [...]


def naive_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Reference: -sum p log p in float64. [..., V] -> [...]."""
    log_p = torch.log_softmax(logits.double() / temperature, dim=-1)  # [..., V]
    return -(log_p.exp() * log_p).sum(-1)  # [...]


# ---------------------------------------------------------------------------------------------- hand values
def test_docstring_examples() -> None:
    ln3 = math.log(3)
    hidden, weight, labels = (
        torch.tensor([[1.0, 0.0]]),
        torch.tensor([[0.0, 0.0], [ln3, 0.0]]),
        torch.tensor([1]),
    )
    # hidden [1, 0] @ weight.T = [0, ln 3]: softmax [1/4, 3/4], logprob log .75 = -.287682; entropy
    # -(.25 ln .25 + .75 ln .75) = .562335
    lp, ent = hidden_to_logprobs(hidden, weight, labels)
    assert lp.item() == pytest.approx(math.log(0.75), rel=1e-6)
    assert ent.item() == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), rel=1e-6)
    # temperature 2: logits [0, ln 3 / 2] = [0, ln sqrt3] -> log(sqrt3 / (1 + sqrt3)) = -.455700
    s3 = math.sqrt(3)
    lp, _ = hidden_to_logprobs(hidden, weight, labels, temperature=2.0)
    assert lp.item() == pytest.approx(math.log(s3 / (1 + s3)), rel=1e-6)


def test_entropy_of_underflowing_probabilities() -> None:
    # logits [0, -1e4, -1e4, 0]: exp(-1e4) underflows to 0 and 0 log 0 counts as 0, so two equal outcomes: ln 2
    hidden = torch.tensor([[1.0]])
    weight = torch.tensor([[0.0], [-1e4], [-1e4], [0.0]])
    lp, ent = hidden_to_logprobs(hidden, weight, torch.tensor([3]))
    assert lp.item() == pytest.approx(math.log(0.5)) and ent.item() == pytest.approx(math.log(2))


@settings(deadline=None, max_examples=30)
@given(
    rows=st.integers(1, 13),
    vocab=st.integers(1, 17),
    chunk=st.integers(1, 20),
    temperature=st.sampled_from([1.0, 0.7, 1.3]),
    seed=st.integers(0, 2**16),
)
def test_hidden_to_logprobs_match_naive_values_and_grads_for_any_shape(
    rows: int, vocab: int, chunk: int, temperature: float, seed: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    hidden = (2 * torch.randn(rows, 3, generator=gen, dtype=F64)).requires_grad_()  # [M, H]
    weight = (2 * torch.randn(vocab, 3, generator=gen, dtype=F64)).requires_grad_()  # [V, H]
    labels = torch.randint(0, vocab, (rows,), generator=gen)  # [M]
    upstream = torch.randn(rows, generator=gen, dtype=F64)  # [M]: a random upstream gradient
    ours, ent = hidden_to_logprobs(hidden, weight, labels, temperature=temperature, chunk_size=chunk)  # [M]
    grads = torch.autograd.grad((ours * upstream).sum(), (hidden, weight))
    logits = hidden @ weight.t()  # [M, V]
    ref = naive_logprobs(logits, labels, temperature)  # [M]
    ref_grads = torch.autograd.grad((ref * upstream).sum(), (hidden, weight))
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ent, naive_entropy(logits.detach(), temperature), rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_bad_chunk_or_temperature_raise() -> None:
    hidden, weight, labels = torch.zeros(1, 2), torch.zeros(3, 2), torch.zeros(1, dtype=torch.long)
    with pytest.raises(ValueError, match="chunk_size"):
        hidden_to_logprobs(hidden, weight, labels, chunk_size=0)
    with pytest.raises(ValueError, match="temperature"):
        hidden_to_logprobs(hidden, weight, labels, temperature=0.0)


# ---------------------------------------------------------------------------------------------- hidden_to_logprobs
# rows > chunk: backward recomputes each chunk's logits; rows <= chunk: one chunk, its softmax kept for backward
# (entropy summed _ENTROPY_BLOCK rows at a time: 2 exercises that loop)
@pytest.mark.parametrize(
    ("rows", "chunk", "temperature", "entropy_block"),
    [(13, 4, 1.0, 32), (13, 1, 0.7, 32), (8, 8, 1.0, 32), (5, 64, 1.3, 32), (7, 64, 0.8, 2)],
)
def test_hidden_to_logprobs_matches_naive(
    monkeypatch: pytest.MonkeyPatch, rows: int, chunk: int, temperature: float, entropy_block: int
) -> None:
    monkeypatch.setattr(logprobs_module, "_ENTROPY_BLOCK", entropy_block)
    gen = torch.Generator().manual_seed(rows * chunk)
    hidden = torch.randn(rows, 6, generator=gen, dtype=F64, requires_grad=True)  # [M, H]
    weight = torch.randn(23, 6, generator=gen, dtype=F64, requires_grad=True)  # [V, H]
    labels = torch.randint(0, 23, (rows,), generator=gen)  # [M]
    upstream = torch.randn(rows, generator=gen, dtype=F64)  # [M]

    lp, ent = hidden_to_logprobs(hidden, weight, labels, temperature=temperature, chunk_size=chunk)
    grads = torch.autograd.grad((lp * upstream).sum(), (hidden, weight))
    logits = hidden @ weight.t()  # [M, V]
    ref = naive_logprobs(logits, labels, temperature)  # [M]
    ref_grads = torch.autograd.grad((ref * upstream).sum(), (hidden, weight))

    torch.testing.assert_close(lp, ref, rtol=1e-12, atol=1e-12)
    assert not ent.requires_grad
    torch.testing.assert_close(ent, naive_entropy(logits.detach(), temperature), rtol=1e-12, atol=1e-12)
    for ours, expected in zip(grads, ref_grads):
        torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)


def test_hidden_to_logprobs_shapes_options_and_gradcheck() -> None:
    hidden = torch.randn(2, 3, 4, dtype=F64, requires_grad=True)  # [N, T, H]
    weight = torch.randn(5, 4, dtype=F64, requires_grad=True)  # [V, H]
    labels = torch.randint(0, 5, (2, 3))  # [N, T]
    lp, ent = hidden_to_logprobs(hidden, weight, labels, chunk_size=4)
    assert lp.shape == (2, 3) and ent.shape == (2, 3)
    # only the hidden states need a gradient (e.g. a frozen lm_head)
    (grad_h,) = torch.autograd.grad(lp.sum(), hidden)
    assert grad_h.shape == hidden.shape
    # gradcheck runs backward many times through one graph, so it takes the recomputing path (6 rows, chunks of 4);
    # the one-chunk path is checked against float64 autograd in test_hidden_to_logprobs_matches_naive
    assert torch.autograd.gradcheck(
        lambda h, w: hidden_to_logprobs(h, w, labels, temperature=0.9, chunk_size=4)[0], (hidden, weight)
    )


def test_softmax_grad_hand_values() -> None:
    # softmax [1/4, 3/4], label 1, upstream 1: onehot - p = [-1/4, 1/4]; upstream 2 at temperature 2: the same
    g = logprobs_module._softmax_grad_(
        torch.tensor([[1.0, 3.0]]), torch.tensor([4.0]), torch.tensor([1]), torch.tensor([1.0]), 1.0
    )
    torch.testing.assert_close(g, torch.tensor([[-0.25, 0.25]]))
    g = logprobs_module._softmax_grad_(
        torch.tensor([[1.0, 3.0]]), torch.tensor([4.0]), torch.tensor([1]), torch.tensor([2.0]), 2.0
    )
    torch.testing.assert_close(g, torch.tensor([[-0.25, 0.25]]))


class _CountMatmuls(TorchDispatchMode):
    """Counts the aten matrix products that run inside the mode."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.addmm_):
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(("chunk", "products"), [(4, 2 + 2 * 3), (8, 1 + 2), (64, 1 + 2)])
def test_one_chunk_backward_needs_no_second_logits_matmul(chunk: int, products: int) -> None:
    # 8 rows in chunks of 4: forward 1 logits product per chunk; backward per chunk the recomputed logits,
    # d hidden and d weight. 8 rows in one chunk (8 or 64): forward 1; backward d hidden and d weight only
    hidden = torch.randn(8, 5, requires_grad=True)  # [M, H]
    weight = torch.randn(11, 5, requires_grad=True)  # [V, H]
    labels = torch.randint(0, 11, (8,))  # [M]
    with _CountMatmuls() as counter:
        lp, _ = hidden_to_logprobs(hidden, weight, labels, chunk_size=chunk)
        lp.sum().backward()
    assert counter.count == products


def test_kept_softmax_refuses_a_second_backward_and_recompute_allows_it() -> None:
    hidden = torch.randn(6, 4, dtype=F64, requires_grad=True)  # [M, H]
    weight = torch.randn(9, 4, dtype=F64, requires_grad=True)  # [V, H]
    labels = torch.randint(0, 9, (6,))  # [M]
    lp, _ = hidden_to_logprobs(hidden, weight, labels, chunk_size=2)  # 3 chunks: recomputed, may run twice
    first = torch.autograd.grad(lp.sum(), (hidden, weight), retain_graph=True)
    second = torch.autograd.grad(lp.sum(), (hidden, weight))
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    lp, _ = hidden_to_logprobs(hidden, weight, labels, chunk_size=6)  # one chunk: kept, used up by backward
    torch.autograd.grad(lp.sum(), (hidden, weight), retain_graph=True)
    with pytest.raises(RuntimeError, match="second backward"):
        torch.autograd.grad(lp.sum(), (hidden, weight))


@pytest.mark.parametrize("cast_block", [2, 256])
def test_hidden_to_logprobs_bf16_close_to_float32(monkeypatch: pytest.MonkeyPatch, cast_block: int) -> None:
    # half inputs are cast to float32 a block of rows at a time; a block of 2 rows exercises the loop
    monkeypatch.setattr(logprobs_module, "_CAST_BLOCK", cast_block)
    gen = torch.Generator().manual_seed(3)
    hidden = torch.randn(9, 16, generator=gen)  # [M, H]
    weight = torch.randn(40, 16, generator=gen) / 4  # [V, H]
    labels = torch.randint(0, 40, (9,), generator=gen)  # [M]
    h16, w16 = hidden.bfloat16().requires_grad_(), weight.bfloat16().requires_grad_()
    lp, _ = hidden_to_logprobs(h16, w16, labels, chunk_size=4)
    assert lp.dtype == torch.float32
    ref = naive_logprobs(h16.detach().float() @ w16.detach().float().t(), labels)  # [M]
    torch.testing.assert_close(lp.double(), ref, rtol=0, atol=0.05)  # bf16 matmul rounding only
    lp.sum().backward()
    assert w16.grad is not None and w16.grad.dtype == torch.bfloat16
    assert h16.grad is not None
    h32, w32 = h16.detach().float().requires_grad_(), w16.detach().float().requires_grad_()
    naive_logprobs(h32 @ w32.t(), labels).sum().backward()
    torch.testing.assert_close(h16.grad.float(), h32.grad, rtol=0.05, atol=0.02)
    torch.testing.assert_close(w16.grad.float(), w32.grad, rtol=0.05, atol=0.02)


def test_inputs_are_not_modified() -> None:
    # the chunk buffers are updated in place: they must never be the caller's tensors
    hidden, weight = torch.randn(6, 3, requires_grad=True), torch.randn(5, 3, requires_grad=True)
    labels = torch.randint(0, 5, (6,))
    before = [x.detach().clone() for x in (hidden, weight)]
    for chunk in (4, 6):  # recomputed in backward; one chunk, its softmax kept
        hidden_to_logprobs(hidden, weight, labels, chunk_size=chunk)[0].sum().backward()
    for x, copy in zip((hidden, weight), before):
        assert torch.equal(x.detach(), copy)


# ---------------------------------------------------------------------------------------------- memory
def saved_bytes(fn: object, inputs: tuple[torch.Tensor, ...]) -> int:
    """Bytes that autograd saves for backward while running fn(), excluding storage shared with `inputs`."""
    input_ptrs = {x.untyped_storage().data_ptr() for x in inputs}
    total = 0

    def pack(x: torch.Tensor) -> torch.Tensor:
        nonlocal total
        if x.untyped_storage().data_ptr() not in input_ptrs:
            total += x.untyped_storage().nbytes()
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        fn()  # type: ignore[operator]
    return total


def test_hidden_to_logprobs_saves_no_vocab_sized_tensor() -> None:
    rows, h, vocab = 256, 8, 2048  # one float32 [M, V] = 2 MiB
    hidden = torch.randn(rows, h, requires_grad=True)  # [M, H]
    weight = torch.randn(vocab, h, requires_grad=True)  # [V, H]
    labels = torch.randint(0, vocab, (rows,))  # [M]
    inputs = (hidden, weight, labels)
    full = rows * vocab * 4

    def naive() -> None:
        torch.log_softmax((hidden @ weight.t()).float(), -1).gather(1, labels[:, None])

    ours = saved_bytes(lambda: hidden_to_logprobs(hidden, weight, labels, chunk_size=32), inputs)
    naive_bytes = saved_bytes(naive, inputs)
    assert naive_bytes >= full  # the naive graph keeps the [M, V] log-softmax (and more)
    assert ours <= rows * 8  # only the per-row logsumexp [M] float32 (4 bytes/row) is new
    # all rows in one chunk: that chunk's float32 softmax [M, V] is kept (the buffer backward would rebuild)
    one_chunk = saved_bytes(lambda: hidden_to_logprobs(hidden, weight, labels, chunk_size=rows), inputs)
    assert full <= one_chunk <= full + rows * 12  # + logsumexp and row sums [M]
    with torch.no_grad():  # no backward to come: nothing kept
        assert saved_bytes(lambda: hidden_to_logprobs(hidden, weight, labels, chunk_size=rows), inputs) == 0
