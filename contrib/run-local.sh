#!/bin/sh
# Run a compose file of contrib/compose as local processes (same commands and environment, no Docker):
#   contrib/run-local.sh contrib/compose/default.yml [--smoke] [--redis-url redis://127.0.0.1:6379/0]
# Needs the repository installed (python3 -m venv .venv && .venv/bin/pip install -r requirements-dev.txt);
# PYTHON picks the interpreter (default: .venv/bin/python next to contrib/, else python3).
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-$here/../.venv/bin/python}
[ -x "$python" ] || python=python3
exec "$python" "$here/run_local.py" "$@"
