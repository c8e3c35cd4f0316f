#!/usr/bin/env bash
# Set up with the test dependencies and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
bash scripts/tfenv.sh   # TensorFlow in its own venv: the tests have TF restore what we write
bash scripts/fwenv.sh   # JAX/Flax and PaddlePaddle, likewise: they load what --to flax / --to paddle write
export KERAS_BACKEND=torch
.venv/bin/ruff check --quiet .          # the linter (pyproject.toml [tool.ruff])
.venv/bin/mypy --no-error-summary       # the type checker (pyproject.toml [tool.mypy])
# the docs site (mkdocs.yml), warnings as errors; its log only on failure (--quiet would also silence --strict)
docs_site=$(mktemp -d)
.venv/bin/mkdocs build --strict -d "$docs_site" >"$docs_site.log" 2>&1 || { cat "$docs_site.log"; exit 1; }
rm -rf "$docs_site" "$docs_site.log"
exec .venv/bin/python -m pytest "$@"
