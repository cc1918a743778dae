"""Token log-probabilities and entropies from final hidden states, chunked over rows so the float32 [M, V] logits
never all exist.

M = rows (N * T positions, flattened), V vocabulary, H hidden size. At V = 49k and M = N * T = 2048, one float32
[M, V] tensor is 384 MiB; a naive `log_softmax(hidden @ W.T)` keeps it (and the logits) alive for backward.
`hidden_to_logprobs` computes each chunk of `chunk_size` rows' logits in float32 in ONE [chunk_size, V] buffer
(updated in place), reduces it to a few numbers per row and drops it; the backward pass (a custom autograd
Function: nothing of size V is saved) recomputes each chunk's logits from hidden [M, H], the lm_head weight
[V, H] and a saved per-row logsumexp; only when one chunk holds every row does it keep that chunk's softmax for
backward rather than compute its logits twice. Peak extra memory is about chunk_size * V * 4 bytes (plus a
float32 [V, H] weight gradient accumulator), so choose chunk_size for the memory budget: 1024 rows x 49k vocab =
192 MiB.

Labels must be valid token ids in [0, V) (mask padding after the fact, e.g. with `response_mask`).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

_ENTROPY_BLOCK = 32  # rows of a kept softmax whose entropy is summed at a time (a [32, V] scratch buffer)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half precision inputs, else the input's own (float32 / float64)."""
    return torch.promote_types(dtype, torch.float32)


def _check(chunk_size: int, temperature: float) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _unnormalised_(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Overwrite scaled logits x [c, V] with u = exp(x - row max); allocates no [c, V].

    Returns (u [c, V] in x's memory, lse [c] = row max + log S, S [c] = sum of u).
    """
    row_max = x.amax(dim=-1, keepdim=True)  # [c, 1]
    row_max.masked_fill_(~torch.isfinite(row_max), 0.0)  # [c, 1]; an all -inf row gives lse -inf
    unnorm = x.sub_(row_max).exp_()  # [c, V], in place
    total = unnorm.sum(dim=-1)  # [c]
    return unnorm, row_max.squeeze(1) + total.log(), total  # [c, V], [c], [c]


def _entropy_(unnorm: Tensor, total: Tensor, *, keep: bool = False) -> Tensor:
    """Entropy from u = exp(x - max) [c, V] and S = sum u [c]: log S - sum(u log u) / S -> [c].

    Equals -sum p log p for p = u / S; xlogy makes 0 log 0 = 0, so -inf logits are fine. u is OVERWRITTEN unless
    keep, which works through _ENTROPY_BLOCK rows at a time in a small scratch buffer instead.
    """
    if not keep:
        return total.log() - torch.special.xlogy(unnorm, unnorm, out=unnorm).sum(dim=-1) / total  # [c]
    ulogu = unnorm.new_empty(unnorm.shape[0])  # [c]
    for r in range(0, unnorm.shape[0], _ENTROPY_BLOCK):
        block = unnorm[r : r + _ENTROPY_BLOCK]  # [b, V]
        ulogu[r : r + _ENTROPY_BLOCK] = torch.special.xlogy(block, block).sum(dim=-1)  # [b]
    return total.log() - ulogu / total  # [c]


def _chunk_stats_(x: Tensor, labels: Tensor, *, keep: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-row logsumexp, label logprob and entropy of scaled logits x [c, V]; OVERWRITES x, allocates no [c, V].

    Returns (lse [c], logprob [c], entropy [c], S [c]). x ends as u = exp(x - row max) (S = its row sums,
    softmax = u / S) when keep, else as scratch.
    """
    picked = x.gather(1, labels.unsqueeze(1)).squeeze(1)  # [c], before x is overwritten
    unnorm, lse, total = _unnormalised_(x)  # [c, V], [c], [c]
    entropy = _entropy_(unnorm, total, keep=keep)  # [c]
    return lse, picked - lse, entropy, total  # [c], [c], [c], [c]


def _softmax_grad_(unnorm: Tensor, total: Tensor, labels: Tensor, grad: Tensor, temperature: float) -> Tensor:
    """d(sum grad * logprob)/d(raw logits) = (onehot(label) - unnorm / total) * grad / temperature.

    unnorm [c, V] is the softmax times total [c] (OVERWRITTEN: the result reuses its memory), labels [c], grad [c]
    -> [c, V]. Example: unnorm [[1, 3]], total [4], label 1, grad 1, temperature 1 -> [[-0.25, 0.25]].
    """
    g = unnorm.mul_((-grad / total).unsqueeze(1))  # [c, V]: -softmax * grad
    g.scatter_add_(1, labels.unsqueeze(1), grad.unsqueeze(1))  # [c, V]
    return g.div_(temperature) if temperature != 1.0 else g  # [c, V]


def _chunk_grad_logits_(x: Tensor, labels: Tensor, lse: Tensor, grad: Tensor, temperature: float) -> Tensor:
    """_softmax_grad_ of one chunk's scaled logits x [c, V] (OVERWRITTEN) given their logsumexp lse [c] -> [c, V]."""
    return _softmax_grad_(x.sub_(lse.unsqueeze(1)).exp_(), torch.ones_like(lse), labels, grad, temperature)


_CAST_BLOCK = 256  # rows cast between half and float32 at a time, so no half-precision [c, V] copy exists


def _logits_(hidden: Tensor, weight: Tensor, dtype: torch.dtype, temperature: float) -> Tensor:
    """(hidden @ weight.T) / temperature in the compute dtype, a fresh buffer. [c, H], [V, H] -> [c, V].

    The matmul runs in the inputs' dtype, as the model's lm_head would; for half inputs it is written into the
    float32 buffer _CAST_BLOCK rows at a time, so the peak stays one float32 [c, V] buffer.
    """
    if hidden.dtype == dtype:
        x = hidden @ weight.t()  # [c, V]
    else:
        x = hidden.new_empty((hidden.shape[0], weight.shape[0]), dtype=dtype)  # [c, V]
        for r in range(0, hidden.shape[0], _CAST_BLOCK):
            x[r : r + _CAST_BLOCK] = hidden[r : r + _CAST_BLOCK] @ weight.t()  # [b, V]
    return x.div_(temperature) if temperature != 1.0 else x  # [c, V]


def _grad_hidden(g: Tensor, weight: Tensor) -> Tensor:
    """g @ weight in the weight's dtype, casting _CAST_BLOCK rows of g at a time. [c, V], [V, H] -> [c, H]."""
    if g.dtype == weight.dtype:
        return g @ weight  # [c, H]
    blocks = [g[r : r + _CAST_BLOCK].to(weight.dtype) @ weight for r in range(0, g.shape[0], _CAST_BLOCK)]
    return torch.cat(blocks)  # [c, H]


class _ChunkedLinearLogprobs(torch.autograd.Function):
    """hidden [M, H], weight [V, H], labels [M] -> (logprobs [M], entropy [M]).

    Saves the per-row logsumexp [M]; with keep (all rows in one chunk, and a backward to come) also that chunk's
    u = exp(x - row max) [M, V] and its row sums [M], so backward needs no second logits matmul.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        hidden: Tensor,
        weight: Tensor,
        labels: Tensor,
        temperature: float,
        chunk_size: int,
        keep: bool,
    ) -> tuple[Tensor, Tensor]:
        dtype = _compute_dtype(hidden.dtype)
        rows = hidden.shape[0]
        logprobs = hidden.new_empty(rows, dtype=dtype)  # [M]
        lse = hidden.new_empty(rows, dtype=dtype)  # [M]
        entropy = hidden.new_empty(rows, dtype=dtype)  # [M]
        kept = kept_total = hidden.new_empty(0, dtype=dtype)  # [0]; keep: [M, V] and [M]
        for s in range(0, rows, chunk_size):
            sl = slice(s, s + chunk_size)
            x = _logits_(hidden[sl], weight, dtype, temperature)  # [c, V]
            lse[sl], logprobs[sl], entropy[sl], total = _chunk_stats_(x, labels[sl], keep=keep)
            if keep:  # rows <= chunk_size: this is the only chunk
                kept, kept_total = x, total  # [M, V], [M]
            del x
        ctx.save_for_backward(hidden, weight, labels, lse, kept, kept_total)
        ctx.temperature, ctx.chunk_size = temperature, chunk_size  # type: ignore[attr-defined]
        ctx.keep, ctx.kept_used = keep, False  # type: ignore[attr-defined]
        ctx.mark_non_differentiable(entropy)
        return logprobs, entropy

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx: FunctionCtx, grad_out: Tensor, _grad_entropy: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None, None, None, None, None]:
        if ctx.kept_used:  # type: ignore[attr-defined]
            raise RuntimeError(
                "hidden_to_logprobs: a second backward through the same graph (retain_graph=True) is not supported "
                "when all rows fit in one chunk (the first backward overwrote the kept softmax); pass a chunk_size "
                "below the number of rows to recompute instead"
            )
        ctx.kept_used = ctx.keep  # type: ignore[attr-defined]
        hidden, weight, labels, lse, kept, kept_total = ctx.saved_tensors  # type: ignore[attr-defined]
        temperature, chunk = ctx.temperature, ctx.chunk_size  # type: ignore[attr-defined]
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]  # type: ignore[attr-defined]
        grad_hidden = torch.empty_like(hidden) if need_h else None  # [M, H]
        # The weight gradient is accumulated over chunks in float32 (or float64) even for bf16 weights.
        grad_weight: Tensor | None = None  # [V, H]
        for s in range(0, hidden.shape[0], chunk):
            sl = slice(s, s + chunk)
            h = hidden[sl]  # [c, H]
            if kept.numel():  # the forward's softmax, no second matmul
                g = _softmax_grad_(kept, kept_total, labels[sl], grad_out[sl], temperature)  # [c, V], in kept
            else:
                x = _logits_(h, weight, lse.dtype, temperature)  # [c, V], recomputed
                g = _chunk_grad_logits_(x, labels[sl], lse[sl], grad_out[sl], temperature)  # [c, V], in x
                del x
            if grad_hidden is not None:
                grad_hidden[sl] = _grad_hidden(g, weight)  # [c, H]
            if need_w:
                h32 = h.to(lse.dtype)  # [c, H]
                grad_weight = g.t() @ h32 if grad_weight is None else grad_weight.addmm_(g.t(), h32)  # [V, H]
            del g  # free before the next chunk's buffer exists
        grad_weight = grad_weight.to(weight.dtype) if grad_weight is not None else None  # [V, H]
        return grad_hidden, grad_weight, None, None, None, None


def hidden_to_logprobs(
    hidden: Tensor,
    lm_head_weight: Tensor,
    labels: Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> tuple[Tensor, Tensor]:
    """Fused lm_head + log-softmax + gather: logprobs of labels from final hidden states, chunked over rows.

    hidden: [M, H] (or [N, T, H]); lm_head_weight: [V, H]; labels: [M] (or [N, T]).
    Returns (logprobs [M], differentiable w.r.t. hidden and weight; entropy [M], detached).
    Memory: one [chunk_size, V] float32 buffer at a time (plus the matmul's own output for bf16 inputs);
    backward recomputes each chunk's logits (one extra matmul) and saves only hidden, weight (already alive),
    labels and a per-row logsumexp [M]; the weight gradient is accumulated in a float32 [V, H] buffer. When all
    M rows fit in one chunk (M <= chunk_size) and a backward is to come, the forward keeps that one buffer's
    softmax for backward instead (the same peak, held from forward to backward, no second matmul); a second
    backward through the same graph then raises.
    No bias (lm heads of Llama/Qwen have none). Outputs are float32 (float64 for float64 inputs).
    Example: hidden [[1, 0]], weight [[0, 0], [ln 3, 0]], labels [1] -> logits [0, ln 3]
             -> logprob log(3 / 4) = -0.2877, entropy -(.25 ln .25 + .75 ln .75) = 0.5623.
    """
    _check(chunk_size, temperature)
    lead = hidden.shape[:-1]
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])  # [M, H]
    flat_labels = labels.reshape(-1)  # [M]
    # One chunk and a backward to come: keep the chunk's softmax rather than recompute its logits in backward
    # (the same [c, V] buffer, alive from here to backward; saves one [M, H] x [H, V] matmul).
    keep = torch.is_grad_enabled() and (hidden.requires_grad or lm_head_weight.requires_grad)
    keep = keep and flat_hidden.shape[0] <= chunk_size
    logprobs, entropy = _ChunkedLinearLogprobs.apply(
        flat_hidden, lm_head_weight, flat_labels, temperature, chunk_size, keep
    )
    return logprobs.reshape(lead), entropy.reshape(lead)  # [...], [...]
