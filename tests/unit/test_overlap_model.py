"""The overlap model (r1zero.bench.overlap) against hand-computed steps and its one structural property: without a
long tail (every second of generation scales with devices) no split beats colocated."""

from __future__ import annotations

import pytest

from r1zero.bench.overlap import best_split, disaggregated_step_s, generation_on


def test_hand_computed_steps() -> None:
    assert generation_on(100.0, 8, 4, scalable=0.5) == pytest.approx(150.0)
    assert generation_on(100.0, 8, 8, scalable=0.3) == pytest.approx(100.0)  # all devices: unchanged
    assert generation_on(100.0, 8, 2, scalable=0.0) == pytest.approx(100.0)  # all tail: devices do not matter
    kwargs = {"devices": 8, "rollout_devices": 4, "scalable": 0.5}
    assert disaggregated_step_s(100.0, 60.0, 10.0, **kwargs) == pytest.approx(160.0)
    split = best_split(100.0, 60.0, 10.0, devices=8, scalable=0.5)
    assert (split.rollout_devices, split.step_s) == (4, pytest.approx(160.0))
    assert split.speedup == pytest.approx(170.0 / 160.0)
    # the module's worked example: verl's 128-GPU colocated DAPO phases, a quarter of generation scalable
    step = disaggregated_step_s(177.85, 113.81, 10.7, devices=128, rollout_devices=64, scalable=0.25)
    assert step == pytest.approx(113.81 * 2 + 10.7)


@pytest.mark.parametrize("gen,train,devices", [(100.0, 60.0, 8), (10.0, 90.0, 16), (50.0, 50.0, 2)])
def test_without_a_tail_no_split_beats_colocated(gen: float, train: float, devices: int) -> None:
    assert best_split(gen, train, 5.0, devices=devices, scalable=1.0).speedup <= 1.0 + 1e-12


def test_all_tail_generation_hides_behind_training_up_to_the_longer_phase() -> None:
    # s = 0: generation takes `gen` on any number of devices; the best split gives the learner all but one
    split = best_split(100.0, 90.0, 0.0, devices=64, scalable=0.0)
    assert split.rollout_devices == 1
    assert split.step_s == pytest.approx(max(100.0, 90.0 * 64 / 63))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rollout_devices"):
        generation_on(1.0, 4, 5, scalable=0.5)
    with pytest.raises(ValueError, match="scalable"):
        generation_on(1.0, 4, 2, scalable=1.5)
    with pytest.raises(ValueError, match="learner device"):
        disaggregated_step_s(1.0, 1.0, 0.0, devices=4, rollout_devices=4, scalable=0.5)
