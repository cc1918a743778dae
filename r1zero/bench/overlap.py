"""What overlapping generation with training can gain: a model of one step, colocated vs disaggregated.

Colocated on N devices, a step is generation, then training, then the rest (sync, rewards, logging):

    colocated = gen + train + other

Disaggregated with max_staleness >= 1 (r1zero.roles), R devices generate the next step while N - R train this
one; the step takes the longer of the two, plus the rest:

    disaggregated(R) = max(gen_on(R), train * N / (N - R)) + other

Training is compute-bound: on fewer devices it takes proportionally longer. Generation is not. Part of it is the
long tail, where a few long completions decode after the others have finished and the devices idle. More
devices do not shorten the tail. `scalable` (s) is the share of `gen` that does scale with devices:

    gen_on(R) = gen * (s * N / R + (1 - s))

With s = 1 (no tail), the best split only gives back colocated's time: gen * N / R + train * N / (N - R) is at
least gen + train. Overlap pays for the tail, the (1 - s) part of generation that colocated mode spends with its
devices mostly idle.

Worked example (s = 0.25, gen 177.85 s, train 113.81 s, other 10.7 s, N = 128, R = 64):
gen_on(64) = 177.85 * (0.25 * 2 + 0.75) = 222.3 s; training on 64 takes 227.6 s; step 238.3 s against
302.4 s colocated: 1.27x.
"""

from __future__ import annotations

from dataclasses import dataclass


def generation_on(gen_s: float, devices: int, rollout_devices: int, scalable: float) -> float:
    """Generation time on `rollout_devices` of `devices` (see the module doc). Example: 100 s, 8 -> 4 devices,
    s = 0.5 -> 100 * (0.5 * 2 + 0.5) = 150 s."""
    if not 0 < rollout_devices <= devices:
        raise ValueError(f"rollout_devices must be in [1, {devices}]; got {rollout_devices}")
    if not 0 <= scalable <= 1:
        raise ValueError(f"scalable must be in [0, 1]; got {scalable}")
    return gen_s * (scalable * devices / rollout_devices + (1 - scalable))


def disaggregated_step_s(
    gen_s: float, train_s: float, other_s: float, *, devices: int, rollout_devices: int, scalable: float
) -> float:
    """Predicted step seconds with max_staleness >= 1 and `rollout_devices` of `devices` sampling.
    Example: gen 100, train 60, other 10, 8 devices, 4 sampling, s = 0.5 -> max(150, 120) + 10 = 160 s."""
    if rollout_devices >= devices:
        raise ValueError("disaggregated needs at least one learner device")
    train_on = train_s * devices / (devices - rollout_devices)
    return max(generation_on(gen_s, devices, rollout_devices, scalable), train_on) + other_s


@dataclass(frozen=True)
class Split:
    rollout_devices: int
    step_s: float
    speedup: float  # colocated step / this step


def best_split(gen_s: float, train_s: float, other_s: float, *, devices: int, scalable: float) -> Split:
    """The rollout/learner split with the shortest predicted step (devices >= 2).
    Example: gen 100, train 60, other 10, 8 devices, s = 0.5: R = 4 gives max(150, 120) + 10 = 160 and R = 5
    gives max(130, 160) + 10 = 170, so R = 4 wins: 170 / 160 = 1.06x."""
    colocated = gen_s + train_s + other_s
    candidates = [
        disaggregated_step_s(gen_s, train_s, other_s, devices=devices, rollout_devices=r, scalable=scalable)
        for r in range(1, devices)
    ]
    step = min(candidates)
    return Split(candidates.index(step) + 1, step, colocated / step)
