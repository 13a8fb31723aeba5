#!/usr/bin/env bash
# Capacity of `orchestrator serve --engine realtime` measured by our own harness (benchmarks/capacity.py:
# an echo Realtime, the server, simulated Twilio callers in their own processes). Prints a table and writes
# JSON to benchmarks/results/.
#
#   benchmarks/capacity.sh                          # default: 2 workers, 25,50,75,100,200,240,360 calls
#   NS=200 HOLD=10 WORKERS=2 benchmarks/capacity.sh
#   NS=25,50,100,200 WORKERS=1 benchmarks/capacity.sh --model-tls   # the model on wss:// (a test CA), as in production
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
[ -x "$repo/.venv/bin/python" ] || python3 -m venv "$repo/.venv"
"$repo/.venv/bin/python" -c "import orchestrator, uvloop" 2>/dev/null || "$repo/.venv/bin/pip" install -q -e "$repo[bench]"
exec "$repo/.venv/bin/python" "$here/capacity.py" --ns "${NS:-25,50,75,100,200,240,360}" --ramp "${RAMP:-5}" \
  --hold "${HOLD:-20}" --workers "${WORKERS:-2}" ${EXTRA:-} "$@"
