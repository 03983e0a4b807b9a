#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to occam's whole test suite: installs what is
# missing, builds (including the ONNX fixtures exported with Debian's PyTorch), runs ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ctest --preset release
