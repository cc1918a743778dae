"""Count the OpenMP parallel regions a piece of work opens, and the time spent inside them (issue #16, item 1).

Every `#pragma omp parallel` in torch, vLLM's CPU kernels, oneDNN and Inductor's generated C++ enters libgomp
through one function, `GOMP_parallel` (the only region entry those libraries import: `nm -D`). A region first
wakes the pool's other threads, which on a VM whose idle cores halt costs ~50 us before any work is done
(`r1zero.cpu.parallel_region_us`), so on a small model the number of regions per decode pass is a cost of its
own. This module builds a tiny shared library that wraps `GOMP_parallel`, counts calls and their wall time, and
optionally tallies them per outlined function; loaded with `LD_PRELOAD` it sees every region of the process.

    path = build_shim()                          # compiled once with the system C compiler, cached
    env = preload_env(path, os.environ)          # run a child process with it, or re-exec yourself
    counter = RegionCounter.attach()             # in that process: None when the shim is not preloaded
    before = counter.snapshot(); work(); regions, seconds = counter.since(before)

Diagnostics only: nothing in a training run loads it. Limits: a region whose team size comes from the default
(`num_threads` 0) is counted as single-thread when `omp_get_max_threads()` is 1, which ignores nesting; nested
or concurrent regions each add their own wall time, so "seconds inside regions" can exceed the wall clock; sites
are named where the library keeps its symbol table and its first segment is linked at address 0 (so that
`dladdr`'s base is the load offset), as in torch, vLLM and Inductor's kernels.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from r1zero.env import cache_dir as r1zero_cache

SHIM_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef void (*region_fn)(void *);
typedef void (*parallel_fn)(region_fn, void *, unsigned, unsigned);
typedef int (*max_threads_fn)(void);

#define TABLE 1024
static parallel_fn real_parallel;
static max_threads_fn real_max_threads;
static long long total_regions, total_ns, single_thread_regions;
static int tracking;
static pthread_once_t resolved = PTHREAD_ONCE_INIT;
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static void *table_fn[TABLE];
static long long table_count[TABLE], table_ns[TABLE];
static int table_size;

static long long now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* `name` in the next object of the global scope; else in the libgomp already loaded privately (ctypes loads
   libraries RTLD_LOCAL, so their libgomp is not in the scope RTLD_NEXT searches). */
static void *find_in_libgomp(const char *name) {
  void *found = dlsym(RTLD_NEXT, name);
  if (!found) {
    void *gomp = dlopen("libgomp.so.1", RTLD_NOLOAD | RTLD_LAZY);
    if (gomp) found = dlsym(gomp, name);
  }
  if (!found) {
    fprintf(stderr, "r1zero omp_regions: no libgomp %s to forward to\n", name);
    abort();
  }
  return found;
}

static void resolve_libgomp(void) {
  real_max_threads = (max_threads_fn)find_in_libgomp("omp_get_max_threads");
  real_parallel = (parallel_fn)find_in_libgomp("GOMP_parallel");
}

void GOMP_parallel(region_fn fn, void *data, unsigned num_threads, unsigned flags) {
  pthread_once(&resolved, resolve_libgomp); /* two threads' first regions may start together */
  /* 0 asks for the calling thread's default team size: a team of one wakes nobody. */
  int team = num_threads ? (int)num_threads : real_max_threads();
  long long start = now_ns();
  real_parallel(fn, data, num_threads, flags);
  long long ns = now_ns() - start;
  __atomic_add_fetch(&total_regions, 1, __ATOMIC_RELAXED);
  if (team <= 1) __atomic_add_fetch(&single_thread_regions, 1, __ATOMIC_RELAXED);
  __atomic_add_fetch(&total_ns, ns, __ATOMIC_RELAXED);
  if (!__atomic_load_n(&tracking, __ATOMIC_RELAXED)) return;
  pthread_mutex_lock(&table_lock);
  int i = 0;
  while (i < table_size && table_fn[i] != (void *)fn) i++;
  if (i == table_size && table_size < TABLE) table_fn[table_size++] = (void *)fn;
  if (i < TABLE) { table_count[i]++; table_ns[i] += ns; }
  pthread_mutex_unlock(&table_lock);
}

long long r1zero_regions(void) { return __atomic_load_n(&total_regions, __ATOMIC_RELAXED); }
long long r1zero_single_thread_regions(void) {
  return __atomic_load_n(&single_thread_regions, __ATOMIC_RELAXED);
}
long long r1zero_regions_ns(void) { return __atomic_load_n(&total_ns, __ATOMIC_RELAXED); }
void r1zero_regions_track(int on) { __atomic_store_n(&tracking, on, __ATOMIC_RELAXED); }

void r1zero_regions_clear(void) {
  pthread_mutex_lock(&table_lock);
  for (int i = 0; i < table_size; i++) { table_count[i] = 0; table_ns[i] = 0; }
  pthread_mutex_unlock(&table_lock);
}

/* Copies the per-function table out; returns its length. */
int r1zero_regions_table(void **fns, long long *counts, long long *ns, int capacity) {
  pthread_mutex_lock(&table_lock);
  int n = table_size < capacity ? table_size : capacity;
  for (int i = 0; i < n; i++) { fns[i] = table_fn[i]; counts[i] = table_count[i]; ns[i] = table_ns[i]; }
  pthread_mutex_unlock(&table_lock);
  return n;
}

/* Which loaded file holds an address, and the address's offset in it (for `nm`). */
const char *r1zero_regions_where(void *address, long long *offset) {
  Dl_info info;
  if (!dladdr(address, &info) || !info.dli_fname) { *offset = 0; return ""; }
  *offset = (long long)((char *)address - (char *)info.dli_fbase);
  return info.dli_fname;
}
"""

_TABLE_CAPACITY = 1024


def c_compiler() -> list[str]:
    """The C compiler command: $CC (it may carry arguments, "ccache gcc"), else cc or gcc; [] when none."""
    return shlex.split(os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or "")


def build_shim(cache_dir: Path | None = None, compiler: str | None = None) -> Path:
    """Compile the shim (once per source version) into `cache_dir` (default: r1zero's cache, `r1zero.env.cache_dir`,
    a folder of this user's, not a shared /tmp another user could fill); its path.

    `compiler` (default `c_compiler()`) may carry arguments. Raises RuntimeError with the compiler's message when
    no C compiler is found or the build fails.
    """
    command = shlex.split(compiler) if compiler else c_compiler()
    if not command:
        raise RuntimeError("counting OpenMP regions needs a C compiler (cc or gcc, or set CC)")
    digest = hashlib.sha256(SHIM_SOURCE.encode()).hexdigest()[:12]
    cache_dir = Path(cache_dir or r1zero_cache() / "omp-regions")
    cache_dir.mkdir(parents=True, exist_ok=True)
    library = cache_dir / f"omp_regions-{digest}.so"
    if library.exists():
        return library
    # Per-process names for the source and the partial library: concurrent builds never share a file.
    source = cache_dir / f"omp_regions-{digest}.{os.getpid()}.c"
    source.write_text(SHIM_SOURCE)
    partial = library.with_suffix(f".{os.getpid()}.tmp")
    try:
        done = subprocess.run(
            [*command, "-O2", "-shared", "-fPIC", "-o", str(partial), str(source), "-ldl", "-lpthread"],
            capture_output=True,
            text=True,
        )
    except OSError as error:
        raise RuntimeError(f"building the OpenMP region counter failed: {command[0]}: {error}") from error
    finally:
        source.unlink(missing_ok=True)
    if done.returncode != 0:
        raise RuntimeError(f"building the OpenMP region counter failed:\n{done.stderr.strip()}")
    partial.replace(library)  # atomic: a concurrent build never sees half a file
    return library


def preload_env(library: Path, env: Mapping[str, str]) -> dict[str, str]:
    """A copy of `env` whose LD_PRELOAD loads `library` first (kept once)."""
    entries = [item for item in env.get("LD_PRELOAD", "").split(":") if item and item != str(library)]
    return {**env, "LD_PRELOAD": ":".join([str(library), *entries])}


@dataclass(frozen=True)
class RegionTotals:
    regions: int
    seconds: float
    single_thread: int = 0  # of `regions`: those run by a team of one thread (no other thread woken)


@dataclass(frozen=True)
class RegionSite:
    """One outlined region function: where it lives, how often it ran and for how long (while tracking)."""

    library: str
    offset: int
    calls: int
    seconds: float
    symbol: str = ""  # filled by `name_sites` when the library keeps its symbols

    @property
    def name(self) -> str:
        return self.symbol or f"{Path(self.library).name or '?'}+{self.offset:#x}"


class RegionCounter:
    """The preloaded shim, seen from Python. `attach()` returns None when it is not loaded in this process."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        lib.r1zero_regions.restype = ctypes.c_longlong
        lib.r1zero_regions_ns.restype = ctypes.c_longlong
        lib.r1zero_single_thread_regions.restype = ctypes.c_longlong
        lib.r1zero_regions_track.argtypes = [ctypes.c_int]
        lib.r1zero_regions_where.restype = ctypes.c_char_p
        lib.r1zero_regions_where.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_longlong)]

    @classmethod
    def attach(cls) -> RegionCounter | None:
        process = ctypes.CDLL(None)
        if not hasattr(process, "r1zero_regions"):
            return None
        return cls(process)

    def snapshot(self) -> RegionTotals:
        lib = self._lib
        single = int(lib.r1zero_single_thread_regions())
        return RegionTotals(int(lib.r1zero_regions()), lib.r1zero_regions_ns() / 1e9, single)

    def since(self, before: RegionTotals) -> RegionTotals:
        now = self.snapshot()
        return RegionTotals(
            now.regions - before.regions,
            now.seconds - before.seconds,
            now.single_thread - before.single_thread,
        )

    def track(self, on: bool) -> None:
        """Tally regions per function from now on (True) or pause the tally (False)."""
        self._lib.r1zero_regions_track(1 if on else 0)

    def clear_sites(self) -> None:
        """Zero the per-site tally (the totals keep counting)."""
        self._lib.r1zero_regions_clear()

    def sites(self) -> list[RegionSite]:
        """The tally since the last `clear_sites`, most time first (sites with no calls left out)."""
        fns = (ctypes.c_void_p * _TABLE_CAPACITY)()
        counts = (ctypes.c_longlong * _TABLE_CAPACITY)()
        ns = (ctypes.c_longlong * _TABLE_CAPACITY)()
        size = self._lib.r1zero_regions_table(fns, counts, ns, _TABLE_CAPACITY)
        sites = []
        for i in range(size):
            if counts[i] == 0:
                continue
            offset = ctypes.c_longlong(0)
            library = self._lib.r1zero_regions_where(fns[i], ctypes.byref(offset)).decode()
            sites.append(RegionSite(library, offset.value, counts[i], ns[i] / 1e9))
        return sorted(sites, key=lambda site: -site.seconds)


def name_sites(sites: list[RegionSite], nm: str = "nm") -> list[RegionSite]:
    """Fill each site's symbol from its library's symbol table (`nm -C`), where the library kept one.

    Outlined region bodies are local symbols (`foo(...) [clone ._omp_fn.0]`), which only unstripped libraries
    keep (vLLM's `_C`, Inductor's kernels); sites in stripped ones (torch) keep their library+offset name.
    """
    symbols: dict[str, dict[int, str]] = {}
    named = []
    for site in sites:
        if site.library not in symbols:
            symbols[site.library] = _symbol_table(site.library, nm)
        named.append(replace(site, symbol=symbols[site.library].get(site.offset, "")))
    return named


def _symbol_table(library: str, nm: str) -> dict[int, str]:
    if not library or shutil.which(nm) is None:
        return {}
    done = subprocess.run([nm, "-C", "--defined-only", library], capture_output=True, text=True)
    table: dict[int, str] = {}
    for line in done.stdout.splitlines():
        address, _, rest = line.partition(" ")
        kind, _, name = rest.partition(" ")
        if kind.lower() == "t" and name:
            try:
                table.setdefault(int(address, 16), name)
            except ValueError:
                continue
    return table
