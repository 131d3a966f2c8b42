#!/usr/bin/env bash
# One-stop set-up for llasm on a fresh Debian/Ubuntu-like machine.
#   scripts/setup.sh runtime   -> system packages + .venv with the assistant runtime
#   scripts/setup.sh dev       -> the above + training, export, test and plot extras
# Idempotent: a second run with unchanged pyproject.toml returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-runtime}"
venv="${LLASM_VENV:-.venv}"
py="${PYTHON:-python3}"

# --- system packages -------------------------------------------------------
sys_pkgs=(portaudio19-dev espeak-ng sox libsndfile1 fortunes fortunes-zh wordnet-base)
# real recorded speech for the tests and the dev/test sets (`llasm-train data real`, docs/data.md)
if [ "$profile" = dev ]; then sys_pkgs+=(pocketsphinx-testdata alsa-utils asterisk-core-sounds-en-wav); fi
missing=()
for p in "${sys_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "llasm setup: installing system packages: ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "llasm setup: please install these system packages first (as root): apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

# --- python environment ----------------------------------------------------
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip -q --disable-pip-version-check)
# LLASM_CUDA=1 with nvcc on PATH: llama-cpp-python is built with CUDA (docs/runtime.md, "GPU"); the CPU build
# stays the default. The flavour is part of the stamp, so switching it runs the set-up again.
cuda=0
if [ "${LLASM_CUDA:-0}" = 1 ]; then
  if command -v nvcc >/dev/null; then cuda=1
  else echo "llasm setup: LLASM_CUDA=1 but nvcc is not on PATH: building llama-cpp-python for the CPU" >&2; fi
fi
stamp="$venv/.llasm-$profile-$(printf 'cuda=%s\n' "$cuda" | cat pyproject.toml scripts/setup.sh - | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then exit 0; fi

"${pip[@]}" install -U pip wheel setuptools >/dev/null 2>&1 || true
# llama.cpp's native build crashes in the AMX matmul path on some Xeons: build a portable library.
# pip keeps the built wheel in its cache, so the second set-up does not rebuild it.
if [ "$cuda" = 1 ]; then
  # a build without GPU offload (the CPU one) is replaced; --no-cache-dir: pip's cache holds the CPU wheel
  if ! "$venv/bin/python" -c "import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_gpu_offload() else 1)" \
      2>/dev/null; then
    echo "llasm setup: building llama-cpp-python with CUDA (nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'); takes a while)"
    CMAKE_ARGS="-DGGML_CUDA=on -DGGML_NATIVE=OFF" "${pip[@]}" install --force-reinstall --no-deps --no-cache-dir \
      "llama-cpp-python>=0.3.16"
  fi
elif ! "$venv/bin/python" -c "import llama_cpp" 2>/dev/null; then
  echo "llasm setup: building llama-cpp-python (portable CPU build, takes a few minutes the first time)"
  CMAKE_ARGS="-DGGML_NATIVE=OFF" "${pip[@]}" install "llama-cpp-python>=0.3.16"
fi
if [ "$profile" = dev ] || [ "$profile" = train ]; then
  # The CPU build of torch (a CUDA build is several GB); CUDA users install their own torch first.
  "$venv/bin/python" -c "import torch" 2>/dev/null || "${pip[@]}" install "torch==2.13.0"
  "${pip[@]}" install -e ".[train,export,dev,plot]"
  # the two-speaker call in pyannote.audio's wheel and the reference recordings in f5-tts's (English, Mandarin)
  # are part of the real-speech sets; only the wheel files are kept
  ls "$venv"/share/llasm/pyannote_audio-*.whl >/dev/null 2>&1 || \
    "${pip[@]}" download --no-deps -d "$venv/share/llasm" "pyannote.audio==4.0.7"
  ls "$venv"/share/llasm/f5_tts-*.whl >/dev/null 2>&1 || \
    "${pip[@]}" download --no-deps -d "$venv/share/llasm" "f5-tts==1.1.22"
else
  "${pip[@]}" install -e .
fi
rm -f "$venv"/.llasm-"$profile"-*
touch "$stamp"
