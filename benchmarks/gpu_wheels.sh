#!/usr/bin/env bash
# Downloads into .whl/ (git-ignored through .git/info/exclude) the wheels of mmjax's
# dependencies that the lent GPU machine's image lacks, for its Python 3.12. Both are
# pure Python. The device call then carries .whl and installs them first
# (docs/benchmarks.md, "GPU"):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qxF "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux2014_x86_64 -d .whl \
    "ml-collections>=0.1.1" "tensorboardX>=2.6"
ls -l .whl
