#!/usr/bin/env bash
# A test-only venv of frameworks ckptsurgeon never imports (tfenv.sh, fwenv.sh):
#   bash scripts/testenv.sh DIR "MODULE ..." PACKAGE...
# Built when DIR's python cannot import every MODULE, then reused; DIR may be a link to a venv kept elsewhere
# (a link to a venv that is gone is removed and the venv built anew in its place).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$1 modules=$2
shift 2
py=${PYTHON:-}
if [ -z "$py" ]; then
  for c in python3.11 python3 python; do command -v "$c" >/dev/null 2>&1 && py=$c && break; done
fi
[ -L "$dir" ] && [ ! -e "$dir" ] && rm "$dir"
if ! "$dir/bin/python" -c "import ${modules// /, }" >/dev/null 2>&1; then
  [ -x "$dir/bin/python" ] || "$py" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
fi
