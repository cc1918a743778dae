"""The OpenMP region counter (r1zero.bench.omp_regions): counts what a process really opens, names where."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from r1zero.bench.omp_regions import (
    RegionCounter,
    RegionSite,
    build_shim,
    c_compiler,
    name_sites,
    preload_env,
)

needs_cc = pytest.mark.skipif(not c_compiler(), reason="no C compiler")

# A library with a known number of parallel regions per call: `n` regions of 2 threads each.
TEST_LIBRARY = r"""
#include <omp.h>
int r1zero_test_regions(int n) {
  int seen = 0;
  for (int i = 0; i < n; i++) {
    #pragma omp parallel num_threads(2)
    {
      #pragma omp atomic
      seen += 1;
    }
  }
  return seen;
}
int r1zero_test_one_thread(int n) {
  int seen = 0;
  for (int i = 0; i < n; i++) {
    #pragma omp parallel num_threads(1)
    {
      seen += 1;
    }
  }
  omp_set_num_threads(1);
  #pragma omp parallel
  {
    seen += 1;
  }
  return seen;
}
int r1zero_test_serial(int n) { int s = 0; for (int i = 0; i < n; i++) s += i; return s; }
"""

CHILD = textwrap.dedent(
    """
    import ctypes, json, sys
    from r1zero.bench.omp_regions import RegionCounter, name_sites
    counter = RegionCounter.attach()
    lib = ctypes.CDLL(sys.argv[1])
    out = {"attached": counter is not None}
    before = counter.snapshot()
    lib.r1zero_test_serial(1000)
    out["serial"] = counter.since(before).regions
    counter.track(True)
    before = counter.snapshot()
    out["threads_seen"] = lib.r1zero_test_regions(7)
    after = counter.since(before)
    counter.track(False)
    lib.r1zero_test_regions(3)  # not tallied per site, but counted in the totals
    out["regions"], out["seconds"], out["single"] = after.regions, after.seconds, after.single_thread
    out["total_after_untracked"] = counter.since(before).regions
    out["sites"] = [[s.name, s.calls] for s in name_sites(counter.sites())]
    before = counter.snapshot()
    out["one_thread_seen"] = lib.r1zero_test_one_thread(4)
    one = counter.since(before)
    out["one_thread"] = [one.regions, one.single_thread]
    counter.clear_sites()
    out["sites_after_clear"] = counter.sites()
    print(json.dumps(out))
    """
)


def _run_child(tmp_path: Path, code: str, *args: str) -> dict[str, Any]:
    shim = build_shim(tmp_path / "cache")
    env = preload_env(shim, os.environ)
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_cc
def test_counts_exactly_the_regions_a_library_opens(tmp_path: Path) -> None:
    compiler = c_compiler()
    source, library = tmp_path / "regions.c", tmp_path / "libregions.so"
    source.write_text(TEST_LIBRARY)
    built = subprocess.run(
        [*compiler, "-O1", "-fopenmp", "-shared", "-fPIC", "-o", library, source], check=False
    )
    if built.returncode != 0:
        pytest.skip("the C compiler here does not build OpenMP code")
    out = _run_child(tmp_path, CHILD, str(library))
    assert out["attached"]
    assert out["serial"] == 0  # a plain loop opens no region
    assert out["threads_seen"] == 14  # 7 regions x 2 threads: the real regions ran, through the wrapper
    assert out["regions"] == 7 and out["single"] == 0  # teams of two
    assert out["seconds"] > 0
    assert out["total_after_untracked"] == 10  # totals keep counting while the per-site tally is paused
    # The tally has one site, named from the library's symbol table, with the 7 tracked calls.
    assert len(out["sites"]) == 1
    name, calls = out["sites"][0]
    assert "r1zero_test_regions" in name and "omp_fn" in name
    assert calls == 7
    # 4 regions asking for one thread, 1 whose default team size was set to one: all 5 counted as single-thread.
    assert out["one_thread_seen"] == 5 and out["one_thread"] == [5, 5]
    assert out["sites_after_clear"] == []


@needs_cc
def test_sees_torch_regions(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import json, torch
        from r1zero.bench.omp_regions import RegionCounter
        torch.set_num_threads(2)
        counter = RegionCounter.attach()
        small, big = torch.ones(10), torch.ones(512, 512)
        before = counter.snapshot(); small + small
        tiny = counter.since(before).regions
        before = counter.snapshot(); big @ big
        print(json.dumps({"tiny": tiny, "mm": counter.since(before).regions}))
        """
    )
    out = _run_child(tmp_path, code)
    assert out["tiny"] == 0  # 10 elements: under torch's grain size, run on the calling thread
    assert out["mm"] >= 1  # a 512x512 product runs on both threads


@needs_cc
def test_build_is_cached(tmp_path: Path) -> None:
    first = build_shim(tmp_path)
    stamp = first.stat().st_mtime_ns
    assert build_shim(tmp_path) == first and first.stat().st_mtime_ns == stamp


@needs_cc
def test_compiler_with_arguments(tmp_path: Path) -> None:
    compiler = shlex.join(c_compiler())
    assert build_shim(tmp_path, compiler=f"{compiler} -DR1ZERO_UNUSED=1").exists()


def test_build_without_compiler_says_so(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"failed|compiler"):
        build_shim(tmp_path, compiler=str(tmp_path / "no-such-cc"))


def test_preload_env_puts_the_shim_first_once() -> None:
    shim = Path("/x/shim.so")
    env = preload_env(shim, {"LD_PRELOAD": "/a.so:/x/shim.so", "KEEP": "1"})
    assert env["LD_PRELOAD"] == "/x/shim.so:/a.so" and env["KEEP"] == "1"
    assert preload_env(shim, {})["LD_PRELOAD"] == "/x/shim.so"


def test_not_attached_without_preload() -> None:
    if "omp_regions" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("this test process itself preloads the shim")
    assert RegionCounter.attach() is None


def test_unnamed_site_falls_back_to_library_and_offset() -> None:
    site = RegionSite(library="/lib/libfoo.so", offset=0x2AE110, calls=3, seconds=0.5)
    assert site.name == "libfoo.so+0x2ae110"
    assert name_sites([RegionSite("", 0, 1, 0.1)])[0].name == "?+0x0"
