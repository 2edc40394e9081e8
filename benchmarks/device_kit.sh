#!/usr/bin/env bash
# Run here (no GPU) before a device session: the pure-Python wheels the GPU image lacks, into .whl/ (ignored),
# for `run(carry=[".whl"])`. The image has torch, lightning, tensorboard, scikit-learn, matplotlib, joblib.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform any -d .whl \
  hydra-core==1.3.8 omegaconf==2.3.1 mlxtend==0.25.0 torch-fidelity==0.4.0 hydra-joblib-launcher==1.2.0
# omegaconf 2.3 needs antlr4 4.9.x, published as a source archive only: build its pure-Python wheel here.
python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
ls -la .whl
