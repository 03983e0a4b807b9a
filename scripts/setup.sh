#!/usr/bin/env bash
# Installs occam's dependencies from Debian 12's packages (only what is missing, so it is cheap to
# re-run) and builds the release preset. Used by quickstart.sh, test.sh and CI.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  cmake ninja-build g++ git
  libfmt-dev nlohmann-json3-dev libcli11-dev          # formatting, JSON, command line
  libonnx-dev libprotobuf-dev protobuf-compiler       # ONNX import
  libdnnl-dev                                         # oneDNN: reference and kernels
  libopenmpi-dev openmpi-bin                          # multi-process pipelines
  libpng-dev libjpeg-dev                              # image inputs
  libgtest-dev libgmock-dev libbenchmark-dev          # tests and benchmarks
  python3-torch python3-torchvision python3-onnx python3-numpy  # test fixtures (/usr/bin/python3)
  gnuplot-nox                                         # plots
)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  echo "setup: installing ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cmake --preset release >/dev/null
cmake --build --preset release
