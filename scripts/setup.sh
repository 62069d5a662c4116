#!/usr/bin/env bash
# Set up rtsr-nas in ./.venv: PyTorch first (so pip never pulls a second, multi-GB build), then the
# project. `--test` also installs the test extra and the system tools the tests use (ffmpeg with
# libsvtav1: the independent Lanczos reference and the survey's exact AVIF command; chromium: the
# dashboard is opened in a real headless browser; postgresql: a throwaway server for the
# `--storage postgresql://` tests, its binaries live in /usr/lib/postgresql/*/bin, off PATH).
# Both also fetch the `photos` data source (24 real photographs from two Debian wallpaper packages,
# `python -m trainers.photos`): where they cannot be had (not Debian/Ubuntu, no network) the setup
# prints a one-line notice and goes on; `--data builtin` and your own folders work without them.
# Idempotent: a second run installs nothing new.
#   RTSR_TORCH="torch==2.13.0"  which torch to install when none is present (default below)
#   RTSR_PYTHON=python3         interpreter for the venv
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
for arg in "$@"; do
  case "$arg" in
    --test) want_test=1 ;;
    *) echo "setup.sh: unknown option '$arg' (valid: --test)" >&2; exit 2 ;;
  esac
done

py="${RTSR_PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($py --version)"
  "$py" -m venv .venv
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "[setup] installing ${RTSR_TORCH:-torch==2.13.0}"
  "${pip[@]}" install "${RTSR_TORCH:-torch==2.13.0}"
fi

if [ "$want_test" = 1 ]; then
  echo "[setup] installing rtsr-nas (editable) with the test and deploy (ONNX) extras"
  "${pip[@]}" install -e ".[test,deploy]"
  missing=()
  command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  pg_found=0
  for bin in "$(command -v initdb 2>/dev/null || true)" /usr/lib/postgresql/*/bin/initdb; do
    if [ -n "$bin" ] && [ -x "$bin" ]; then pg_found=1; fi
  done
  [ "$pg_found" = 1 ] || missing+=(postgresql)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "[setup] apt-get install ${missing[*]}"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      echo "[setup] the tests need: ${missing[*]} (install them with your system's package manager)" >&2
      exit 1
    fi
  fi
else
  echo "[setup] installing rtsr-nas (editable)"
  "${pip[@]}" install -e .
fi
# The photos data source: apt-get download needs no root, but empty package lists (a fresh container)
# need an update, which only root can run. Never fails the setup.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && ! apt-cache show mate-backgrounds >/dev/null 2>&1; then
  echo "[setup] apt-get update (for the photos data source)"
  apt-get update -qq || true
fi
echo "[setup] fetching the photos data source (about 140 MB once; cached in ${RTSR_CACHE_DIR:-$HOME/.cache/rtsr-nas}/photos)"
.venv/bin/python -m trainers.photos --setup || echo "[setup] notice: the photos data source is not set up (see above; python -m trainers.photos retries)"
echo "[setup] ready: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')"
