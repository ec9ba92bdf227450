#!/usr/bin/env bash
# Everything the test suite needs, on a fresh machine of this project's kind (root, python 3.11).
# torch is pinned to the CPU build first: an unpinned torch resolves to a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
"$PYTHON" -m pip install --disable-pip-version-check --no-input "torch==2.13.0"
"$PYTHON" -m pip install --disable-pip-version-check --no-input -e ".[test]"
bash .ci/install-whisperx.sh
