#!/usr/bin/env bash
# Capacity of `orchestrator serve` as a Media Streams ⇄ Realtime bridge, measured with an external load
# harness for such bridges (BENCH_DIR: its run_capacity.py, fake callers and an echo "model"; its README has
# the method). Prints the harness's table; results go to benchmarks/results/.
#
#   BENCH_DIR=/path/to/harness benchmarks/bridge_capacity.sh                 # default sweep
#   BENCH_DIR=… NS=25,50 DURATION=20 WORKERS=1 benchmarks/bridge_capacity.sh
#   BENCH_DIR=… EXTRA=--model-tls benchmarks/bridge_capacity.sh              # the model on wss:// (test CA)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
bench="${BENCH_DIR:?set BENCH_DIR to the load harness folder (the one holding run_capacity.py)}"
venv="${BENCH_VENV:-$repo/.venv-bench}"
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q -r "$bench/requirements.txt"; }
[ -x "$repo/.venv/bin/orchestrator" ] || { python3 -m venv "$repo/.venv" && "$repo/.venv/bin/pip" install -q -e "$repo"; }
mkdir -p "$here/results"
out="$here/results/orchestrator-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
token=bench-auth-token
data="$(mktemp -d)"
# The echo model never proposes a route: a long triage budget keeps each call up for the whole run.
"$venv/bin/python" "$bench/run_capacity.py" --label orchestrator \
  --server-cmd "exec '$repo/.venv/bin/orchestrator' serve --port {port} --workers ${WORKERS:-2} --engine realtime --data-dir '$data'" \
  --server-env OPENAI_API_KEY=sk-fake --server-env "TWILIO_AUTH_TOKEN=$token" \
  --server-env 'ORCHESTRATOR_REALTIME_URL={model_url}' --server-env ORCHESTRATOR_TRIAGE__BUDGET_SECONDS=3600 \
  --server-env 'ORCHESTRATOR_PUBLIC_URL=http://127.0.0.1:{port}' \
  --twiml-url 'http://127.0.0.1:{port}/voice/incoming' --caller-args "--twilio-auth-token $token" \
  --ns "${NS:-25,50,100,150}" --duration "${DURATION:-30}" --ramp "${RAMP:-8}" ${EXTRA:-} --out "$out"
"$venv/bin/python" "$bench/report.py" "$out"
