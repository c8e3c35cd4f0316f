#!/usr/bin/env bash
# Set up with the test dependencies and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
bash scripts/tfenv.sh   # TensorFlow in its own venv: the tests have TF restore what we write
export KERAS_BACKEND=torch
.venv/bin/ruff check --quiet .          # the linter (pyproject.toml [tool.ruff])
.venv/bin/mypy --no-error-summary       # the type checker (pyproject.toml [tool.mypy])
exec .venv/bin/python -m pytest "$@"
