#!/usr/bin/env bash
# Everything the test suite needs, on a fresh machine of this project's kind (root, python 3.11).
# torch is pinned to the CPU build first: an unpinned torch resolves to a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
# g++ builds the kernel's scalar path for the bit-exactness tests and the simulated NPU;
# make drives kernels/Makefile's dry checks. Both come with this machine image; install if not.
if ! command -v g++ >/dev/null 2>&1 || ! command -v make >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends g++ make
fi
"$PYTHON" -m pip install --disable-pip-version-check --no-input "torch==2.13.0"
# The ray extra: the tests run archive jobs on a local Ray cluster too. The server extra:
# `amanuensis-npu serve` is tested over loopback, and its page in Debian's chromium. The test
# extra brings the vendor runtimes the tests run (the OpenVINO and QNN plugin EPs).
"$PYTHON" -m pip install --disable-pip-version-check --no-input -e ".[test,ray,server]"
if ! command -v chromium >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends chromium
fi
bash .ci/install-whisperx.sh
