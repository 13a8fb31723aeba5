#!/usr/bin/env bash
# The reconstruction of the reference bridge (main.py; see its docstring: NOT the reference itself) under
# the shared harness, with the reference's own sweep options. Results go to ../results/.
#
#   benchmarks/reference_reconstruction/run.sh                   # 100,120,130 x 2
#   NS=120 EXTRA="--repeat 3" benchmarks/reference_reconstruction/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$(dirname "$here")")"
bench="${BENCH_DIR:?set BENCH_DIR to the load harness folder (run_capacity.py)}"
bench_venv="${BENCH_VENV:-$repo/.venv-bench}"
venv="${RECONSTRUCTION_VENV:-$repo/.venv-reference}"
[ -x "$bench_venv/bin/python" ] || { python3 -m venv "$bench_venv" && "$bench_venv/bin/pip" install -q -r "$bench/requirements.txt"; }
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q -r "$here/requirements.txt"; }
out="$repo/benchmarks/results/reference-reconstruction-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
"$bench_venv/bin/python" "$bench/run_capacity.py" --label reference-reconstruction \
  --server-cmd "exec '$venv/bin/python' '$here/main.py'" \
  --server-env OPENAI_API_KEY=sk-fake --server-env 'PORT={port}' --server-env 'OPENAI_REALTIME_URL={model_url}' \
  --twiml-url 'http://127.0.0.1:{port}/incoming-call' --ws-origin 'ws://127.0.0.1:{port}' \
  --ns "${NS:-100,120,130}" --duration "${DURATION:-40}" --ramp "${RAMP:-10}" ${EXTRA:---repeat 2} --out "$out"
"$bench_venv/bin/python" "$bench/report.py" "$out"
