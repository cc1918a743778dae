"""Pure parts of data parallelism and launching: no process group, no model (fast; not marked distributed)."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from r1zero.config import RunConfig
from r1zero.distributed import RankFailure, expand_hostlist, launcher_env, phase
from r1zero.dp import Shard, check_resume_world_size, checkpoint_world_size, combine_rank_metrics

# ---------------------------------------------------------------------------------------------- Slurm hostlists


@pytest.mark.parametrize(
    ("hostlist", "hosts"),
    [
        ("node[01-03],gpu7", ["node01", "node02", "node03", "gpu7"]),
        ("gpu7", ["gpu7"]),
        ("a[1,3-4]", ["a1", "a3", "a4"]),
        ("n[08-10]", ["n08", "n09", "n10"]),
        ("r[1-2]-n[8,10]", ["r1-n8", "r1-n10", "r2-n8", "r2-n10"]),
        ("x1,y[2-3],z", ["x1", "y2", "y3", "z"]),
        ("127.0.0.1", ["127.0.0.1"]),
    ],
)
def test_expand_hostlist(hostlist: str, hosts: list[str]) -> None:
    assert expand_hostlist(hostlist) == hosts


SLURM_TASK = {
    "SLURM_PROCID": "5",
    "SLURM_NTASKS": "8",
    "SLURM_LOCALID": "1",
    "SLURM_STEP_ID": "0",
    "SLURM_JOB_ID": "123456",
    "SLURM_JOB_NODELIST": "node[01-03],gpu7",
}


def test_slurm_task_maps_to_torch_variables() -> None:
    assert launcher_env(SLURM_TASK) == {
        "RANK": "5",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "node01",  # the first host
        "MASTER_PORT": str(20000 + 123456 % 20000),  # the same on every task, no communication
    }


def test_slurm_mapping_prefers_the_step_and_keeps_what_is_set() -> None:
    env = SLURM_TASK | {"SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NODELIST": "gpu7", "MASTER_PORT": "2222"}
    mapped = launcher_env(env)
    assert (mapped["WORLD_SIZE"], mapped["MASTER_ADDR"], mapped["MASTER_PORT"]) == ("4", "gpu7", "2222")


@pytest.mark.parametrize(
    "env",
    [
        SLURM_TASK | {"RANK": "0"},  # torchrun (or the sbatch script) already set it
        {k: v for k, v in SLURM_TASK.items() if k != "SLURM_STEP_ID"},  # a plain python in an salloc shell
        SLURM_TASK | {"R1ZERO_SLURM_ENV": "0"},  # turned off
        {},
    ],
)
def test_no_mapping(env: dict[str, str]) -> None:
    assert launcher_env(env) == {}


def test_submitit_local_task() -> None:
    env = {
        "SUBMITIT_EXECUTOR": "local",
        "SUBMITIT_LOCAL_GLOBALID": "1",
        "SUBMITIT_LOCAL_LOCALID": "1",
        "SUBMITIT_LOCAL_NTASKS": "2",
        "SUBMITIT_LOCAL_JOB_ID": "777",
    }
    assert launcher_env(env) == {
        "RANK": "1",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "20777",
    }


# ---------------------------------------------------------------------------------------------- shards


def test_shards_cover_the_batch_in_order() -> None:
    # B = 8 prompts over 4 ranks: [0, 2), [2, 4), [4, 6), [6, 8).
    assert [Shard(r, 4).own(8) for r in range(4)] == [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert [Shard(r, 4).generated(8) for r in range(4)] == [(0, 2), (2, 4), (4, 6), (6, 8)]


def test_tensor_parallel_replicas_generate_their_ranks_slices() -> None:
    # world 4, tp 2: replica {0, 1} generates [0, 4), replica {2, 3} generates [4, 8); each rank learns on its own.
    assert [Shard(r, 4, tp=2).generated(8) for r in range(4)] == [(0, 4), (0, 4), (4, 8), (4, 8)]
    assert Shard(3, 4, tp=2).own(8) == (6, 8)
    assert [Shard(r, 4, tp=2).replica_leader for r in range(4)] == [True, False, True, False]


def test_eval_split_is_contiguous_and_balanced() -> None:
    # 5 problems over 2 replicas: 3 + 2; over 4 replicas: 2 + 1 + 1 + 1; fewer problems than replicas: empty.
    assert [Shard(r, 2).replica_split(5) for r in range(2)] == [(0, 3), (3, 5)]
    assert [Shard(r, 4).replica_split(5) for r in range(4)] == [(0, 2), (2, 3), (3, 4), (4, 5)]
    assert [Shard(r, 4, tp=2).replica_split(5) for r in range(4)] == [(0, 3), (0, 3), (3, 5), (3, 5)]
    assert Shard(2, 3).replica_split(1) == (1, 1)


def test_prompts_per_step_must_divide_over_the_ranks() -> None:
    cfg = RunConfig()
    cfg.rollout.prompts_per_step = 6
    cfg.check_world_size(2)
    cfg.check_world_size(3)
    with pytest.raises(
        ValueError, match=r"prompts_per_step \(6\) is the global .* number of processes \(4\)"
    ):
        cfg.check_world_size(4)
    cfg.rollout.tensor_parallel_size = 4
    with pytest.raises(
        ValueError, match=r"tensor_parallel_size \(4\) must divide the number of processes \(6\)"
    ):
        cfg.check_world_size(6)


def test_disaggregated_tensor_parallel_divides_the_workers_not_the_learners() -> None:
    # 3 processes, 2 rollout workers at tp=2: one learner rank (its world is 1 by the time the check runs) and
    # one tp-2 replica. Only the workers must divide by tp (roles.role_counts checks them); colocated, the
    # learners' processes host the engines, so there they must.
    cfg = RunConfig()
    cfg.rollout.prompts_per_step = 2
    cfg.rollout.tensor_parallel_size = 2
    cfg.roles.mode = "disaggregated"
    cfg.roles.rollout_workers = 2
    cfg.check_world_size(1)
    cfg.roles.mode = "colocated"
    with pytest.raises(
        ValueError, match=r"tensor_parallel_size \(2\) must divide the number of processes \(1\)"
    ):
        cfg.check_world_size(1)


# ---------------------------------------------------------------------------------------------- metrics


def test_rank_metrics_combine_as_one_process_would() -> None:
    rank0 = {"loss/entropy": 1.0, "loss/policy": 0.25, "loss/grad_norm": 2.0, "perf/learner_tokens": 10.0,
             "sync/max_abs_logprob_diff": 1e-6, "perf/step_s": 3.0}  # fmt: skip
    rank1 = {"loss/entropy": 4.0, "loss/policy": 0.5, "loss/grad_norm": 2.0, "perf/learner_tokens": 30.0,
             "sync/max_abs_logprob_diff": 3e-6, "perf/step_s": 5.0}  # fmt: skip
    out = combine_rank_metrics([rank0, rank1], weights=[10, 30])
    assert out["loss/entropy"] == pytest.approx((1.0 * 10 + 4.0 * 30) / 40)  # token-weighted: 3.25
    assert out["loss/policy"] == pytest.approx(0.75)  # shares of one globally normalised loss add up
    assert out["loss/grad_norm"] == 2.0  # global already
    assert out["perf/learner_tokens"] == 40.0
    assert out["sync/max_abs_logprob_diff"] == 3e-6  # the worst rank
    assert out["perf/step_s"] == 3.0  # rank 0's own
    assert combine_rank_metrics([rank0], [10]) == rank0  # one process: unchanged


# ---------------------------------------------------------------------------------------------- resume


def test_checkpoint_world_size_from_meta() -> None:
    assert checkpoint_world_size({"extra": {"world_size": 4}, "files": {}}) == 4
    files = {"rng_rank0.pt": {}, "rng_rank1.pt": {}, "learner/mp_rank_00_model_states.pt": {}}
    assert checkpoint_world_size({"extra": {}, "files": files}) == 2  # older checkpoints: count RNG files


def test_resume_with_another_world_size_names_both() -> None:
    meta = {"extra": {"world_size": 2}, "files": {}}
    check_resume_world_size(meta, 2, Path("ck"))
    with pytest.raises(
        ValueError, match=r"written by 2 process\(es\) but this run has 1.*--nproc_per_node 2"
    ):
        check_resume_world_size(meta, 1, Path("ck"))


# ---------------------------------------------------------------------------------------------- failures


def test_phase_names_rank_phase_and_step() -> None:
    with (
        pytest.raises(
            RankFailure, match=r"^rank 0 failed in phase reward at step 3: ValueError: boom"
        ) as err,
        phase("reward", 3),
    ):
        raise ValueError("boom")
    assert isinstance(err.value.__cause__, ValueError)
    with pytest.raises(RankFailure, match="phase rollout"), phase("learner", 1), phase("rollout", 1):
        raise RuntimeError("inner")  # the innermost phase names it; not wrapped twice


def test_fault_hook_fires_only_where_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """tests/distributed/fault_hook (R1ZERO_FAULT, in every child process of these tests): the rank, phase and step
    asked, and only those; the wrapped phase exits before the phase is entered, and otherwise is the phase."""
    from fault_hook.sitecustomize import fault, wrap_phase

    env = {"R1ZERO_FAULT": "0:learner:2"}
    assert fault("learner", 2, 0, env) == "exit"
    assert fault("learner", 2, 0, {"R1ZERO_FAULT": "0:learner:2:hang"}) == "hang"
    assert fault("learner", 1, 0, env) is None and fault("reward", 2, 0, env) is None
    assert fault("learner", 2, 1, env) is None and fault("learner", 2, 0, {}) is None
    exits: list[int] = []
    monkeypatch.setattr("os._exit", exits.append)
    monkeypatch.setenv("R1ZERO_FAULT", "0:learner:2")
    ranks = [0]
    distributed = types.SimpleNamespace(
        phase=phase, rank=lambda: ranks[0], set_identity=lambda name: None, rank_name=lambda: "rank 0"
    )
    distributed.__name__ = "r1zero.distributed"
    wrap_phase(distributed)
    with distributed.phase("learner", 1):
        pass
    assert exits == []
    with pytest.raises(RankFailure, match="failed in phase reward at step 2"), distributed.phase("reward", 2):
        raise ValueError("boom")  # still the real phase around the work
    with distributed.phase("learner", 2):
        pass
    assert exits == [1]
    # Roles: launched as rank 1, then rank 0 of its role's world. R1ZERO_FAULT names the launched rank.
    monkeypatch.setenv("R1ZERO_FAULT", "1:learner:3")
    ranks[0] = 1
    distributed.set_identity("rollout worker 0 (rank 1)")
    ranks[0] = 0
    with distributed.phase("learner", 3):
        pass
    assert exits == [1, 1]
