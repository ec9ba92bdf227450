#!/usr/bin/env bash
# Install whisperx 3.8.6 next to the CPU build of torch 2.13.0 without letting pip
# replace torch. whisperx pins torch~=2.8.0 (and pyannote/torchaudio-based packages
# pin torch/torchaudio), so every package that would drag in another torch goes in
# with --no-deps and its non-torch dependencies are listed here by hand. A constraint
# file pins torch as a safety net: if anything still asks for another torch, pip fails
# instead of downloading a multi-GB CUDA build.
#
# Idempotent: re-running it only re-checks what is installed.
# Usage: bash .ci/install-whisperx.sh   (as root; python 3.11 with torch==2.13.0 present)
set -euo pipefail

PYTHON="${PYTHON:-python}"
PIP=("$PYTHON" -m pip install --disable-pip-version-check --no-input)

torch_version="$("$PYTHON" -c 'import torch; print(torch.__version__)')"
case "$torch_version" in
  2.13.0*) ;;
  *) echo "install-whisperx: expected torch 2.13.0 (CPU), found $torch_version" >&2; exit 1 ;;
esac

constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
echo "torch==2.13.0" > "$constraints"

# 1. The real runtime needs of the packages in step 2 (torch lower bounds only, satisfied by
#    torch 2.13.0). First, and with whisperx not installed (the README's first command puts
#    it there with --no-deps; step 2 puts it back): pip checks the pins of every installed
#    package that depends on what it installs, and whisperx's torch~=2.8 would fill the log
#    with a red "dependency conflicts" block. --no-deps installs are not checked.
if "$PYTHON" -m pip show --disable-pip-version-check whisperx >/dev/null 2>&1; then
  "$PYTHON" -m pip uninstall --disable-pip-version-check -y -q whisperx
fi
"${PIP[@]}" -c "$constraints" \
  "faster-whisper==1.2.1" \
  "nltk>=3.9.1" \
  "omegaconf>=2.3.0" \
  "pandas>=2.2.3" \
  "transformers>=4.48,<5" \
  "huggingface-hub<1.0" \
  "asteroid-filterbanks>=0.4.0" \
  "einops>=0.8.1" \
  "lightning>=2.4" \
  "matplotlib>=3.10.0" \
  "opentelemetry-api>=1.34.0" \
  "opentelemetry-exporter-otlp>=1.34.0" \
  "opentelemetry-sdk>=1.34.0" \
  "pyannote-core>=6.0.1" \
  "pyannote-database>=6.1.1" \
  "pyannote-metrics>=4.0.0" \
  "pyannote-pipeline>=4.0.0" \
  "pyannoteai-sdk>=0.3.0" \
  "pytorch-metric-learning>=2.8.1" \
  "rich>=13.9.4" \
  "safetensors>=0.5.2" \
  "torchmetrics>=1.6.1" \
  "julius>=0.2.3,<0.3" \
  "primePy>=1.3" \
  "packaging>=21.3" \
  "silero-vad==6.2.3"

# 2. Packages whose metadata pins torch/torchaudio to something we must not install.
"${PIP[@]}" --no-deps \
  "whisperx==3.8.6" \
  "pyannote-audio==4.0.7" \
  "torchaudio==2.8.0" \
  "torchcodec==0.7.0" \
  "torch-audiomentations==0.12.0" \
  "torch-pitch-shift==1.2.5"

# 3. Every torchaudio wheel on the registry is a CUDA build whose C extension needs
#    libc10_cuda; without it the pure-Python parts (all whisperx uses here) import fine.
ta_dir="$("$PYTHON" - <<'PY'
import importlib.util, os
spec = importlib.util.find_spec("torchaudio")
print(os.path.dirname(spec.origin) if spec and spec.origin else "")
PY
)"
if [ -n "$ta_dir" ]; then
  find "$ta_dir" -name '_torchaudio*.so' -print -delete
fi

# 4. The whisperx command line decodes audio by running the ffmpeg program.
if ! command -v ffmpeg >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends ffmpeg
fi

# 5. Prove torch survived and the stack imports.
"$PYTHON" - <<'PY'
import warnings
import torch
assert torch.__version__.startswith("2.13.0"), torch.__version__
# pyannote warns that torchcodec cannot decode files; whisperx hands it waveforms (README).
warnings.filterwarnings("ignore", message=r"\s*torchcodec is not installed correctly")
import whisperx, whisperx.asr, whisperx.vads, torchaudio, silero_vad  # noqa: F401
print("install-whisperx: torch", torch.__version__, "whisperx OK")
PY
