"""Group-relative advantages: rewards [N] -> advantages [N].

N = B * G rows; each consecutive run of G = group_size rows is one prompt's group (see `r1zero.types`).
GRPO (DeepSeek-Math / R1) centres each reward on its group's mean and divides by the group's std; Dr. GRPO
(Liu et al. 2025, "Understanding R1-Zero-Like Training") drops the division, which biases towards easy and hard
prompts less; "batch" divides by one std over the whole batch (as TRL's `scale_rewards="batch"`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def _bessel_std(x: Tensor, dim: int | None = None) -> Tensor:
    """Bessel-corrected std (as `torch.std`), defined as 0 where there is a single sample (torch gives NaN).

    x: [B, G]; dim=1 -> [B, 1] (keepdim), dim=None -> 0-dim over all entries.
    Example: _bessel_std(tensor([[1., 0., 0., 0.]]), 1) -> [[0.5]]; _bessel_std(tensor([[3.]]), 1) -> [[0.]].
    """
    count = x.shape[dim] if dim is not None else x.numel()
    if count <= 1:
        return torch.zeros_like(x[:, :1] if dim is not None else x.sum())  # [B, 1] or 0-dim
    if dim is None:
        return x.std()  # 0-dim
    return x.std(dim=dim, keepdim=True)  # [B, 1]


def _scale_group(grouped: Tensor, eps: float) -> Tensor:
    """GRPO: each group's own std + eps. grouped [B, G] -> [B, 1]."""
    return _bessel_std(grouped, dim=1) + eps  # [B, 1]


def _scale_batch(grouped: Tensor, eps: float) -> Tensor:
    """One std of all N rewards + eps. grouped [B, G] -> 0-dim."""
    return _bessel_std(grouped) + eps  # 0-dim


def _scale_none(grouped: Tensor, eps: float) -> Tensor:
    """Dr. GRPO: no division. grouped [B, G] -> 0-dim ones."""
    return torch.ones((), dtype=grouped.dtype, device=grouped.device)  # 0-dim


# normalize name -> (grouped rewards [B, G], eps) -> divisor broadcastable to [B, G]
NORMALIZERS: dict[str, Callable[[Tensor, float], Tensor]] = {
    "group": _scale_group,
    "batch": _scale_batch,
    "none": _scale_none,
}


def _grouped(rewards: Tensor, group_size: int) -> Tensor:
    """Check shapes and view rewards [N] as [B, G]; ValueError on a bad shape or group size."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(rewards.shape)}")
    if rewards.numel() % group_size != 0:
        raise ValueError(
            f"rewards has N={rewards.numel()} entries, not divisible by group_size={group_size}: "
            "every prompt needs exactly group_size completions"
        )
    return rewards.view(-1, group_size)  # [B, G]


def group_advantages(
    rewards: Tensor, group_size: int, *, normalize: str = "group", eps: float = 1e-6
) -> Tensor:
    """Advantage of each completion: its reward minus its group's mean, optionally divided by a std.

    rewards: [N] float, N = B * G, consecutive runs of `group_size` rows are one group.
    normalize: "group" (GRPO: / (group std + eps)), "batch" (/ (std of all N rewards + eps)),
        "none" (Dr. GRPO: centred only). Stds are Bessel-corrected, as `torch.std`; a single sample has std 0.
    Returns [N], same dtype as rewards (floating).

    Example: rewards [0, 0, 1, 1], G=2 -> every group is constant -> [0, 0, 0, 0];
             rewards [1, 0, 0, 0], G=4, "group": mean .25, std sqrt((.5625 + 3 * .0625) / 3) = .5
             -> [1.5, -.5, -.5, -.5] (up to eps); "none" -> [.75, -.25, -.25, -.25].
    Why: the group is GRPO's baseline (no value network); the std division is what Dr. GRPO removes.
    """
    if normalize not in NORMALIZERS:
        raise ValueError(f"unknown normalize={normalize!r}; valid: {sorted(NORMALIZERS)}")
    if not rewards.is_floating_point():
        rewards = rewards.float()  # [N]
    grouped = _grouped(rewards, group_size)  # [B, G]
    # Centre on the group mean via offsets from the group's first reward: the same value mathematically, but a
    # constant group gets exactly 0 (a plain mean of equal floats can round away from them, e.g. 3 x 0.1).
    offsets = grouped - grouped[:, :1]  # [B, G]
    centred = offsets - offsets.mean(dim=1, keepdim=True)  # [B, G]
    scaled = centred / NORMALIZERS[normalize](grouped, eps)  # [B, G]
    return scaled.reshape(-1)  # [N]


def filter_zero_variance_groups(rewards: Tensor, group_size: int) -> tuple[Tensor, Tensor]:
    """DAPO dynamic sampling: mark the rows of every group whose rewards are all equal, to be dropped.

    A constant group has zero advantage everywhere, so it adds no gradient but still dilutes token-mean losses.
    rewards: [N], consecutive runs of `group_size` rows are one group.
    Returns (keep [N] bool: True for rows of groups with at least two distinct rewards,
             num_dropped_groups: 0-dim long).

    Example: rewards [1, 1, 0, 1], G=2 -> keep [False, False, True, True], num_dropped_groups 1.
    """
    grouped = _grouped(rewards, group_size)  # [B, G]
    constant = (grouped == grouped[:, :1]).all(dim=1)  # [B] bool
    keep = (~constant).repeat_interleave(group_size)  # [N] bool
    return keep, constant.sum().to(torch.long)  # [N], 0-dim
