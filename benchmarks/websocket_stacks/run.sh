#!/usr/bin/env bash
# Server CPU per WebSocket message of candidate stacks for /media (an experiment for issue 6; see README.md).
# Builds its own venv (.venv-wslab/, git-ignored) and prints one JSON line per variant × N.
#
#   benchmarks/websocket_stacks/run.sh                  # every variant at 50, 100, 200 connections
#   VARIANTS="a d" NS="100" benchmarks/websocket_stacks/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/../../.venv-wslab"
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q \
  trio==0.35.0 wsproto==1.3.2 hypercorn==0.18.0 starlette h11 websockets==17.4 picows==2.3.1 uvloop==0.23.0 orjson; }
port=9300
for variant in ${VARIANTS:-a b c d f e1 e2 e3}; do
  for n in ${NS:-50 100 200}; do
    port=$((port + 1))
    "$venv/bin/python" "$here/stacks_server.py" "$variant" "$port" > /dev/null 2>&1 & server=$!
    sleep 1.5
    load="$(cat /proc/loadavg)"
    line="$(timeout 60 "$venv/bin/python" "$here/stacks_loadgen.py" "$port" "$n" "$server" 2 10 "$variant")"
    echo "${line%\}}, \"loadavg_before\": \"$load\"}"
    kill "$server"; wait "$server" 2>/dev/null || true
    sleep 1
  done
done
