#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to occam's main job: installs what is missing,
# builds, then plans resnet18 (the default model) for a 1 MiB chip and compares occam with the
# base case, Layer Fusion and greedy partitioning on the default hardware.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
occam=build/release/tools/occam/occam
echo
echo "\$ occam plan resnet18 --sram 1MiB"
"$occam" plan resnet18 --sram 1MiB
echo
echo "\$ occam compare resnet18"
"$occam" compare resnet18
