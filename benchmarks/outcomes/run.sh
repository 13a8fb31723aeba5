#!/usr/bin/env bash
# Whole calls judged by where they end: every persona here through a real `orchestrator serve`, with the
# offline engine and with a perfect model on the fake Realtime (whole_calls.py says how). Needs the speech
# extra (the caller speaks with Piper and listens with Whisper).
#
#   bash benchmarks/outcomes/run.sh                                  # both engines, every persona
#   bash benchmarks/outcomes/run.sh --engine realtime --config acme_plumbing
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
[ -x "$repo/.venv/bin/orchestrator" ] || { python3 -m venv "$repo/.venv" && "$repo/.venv/bin/pip" install -q -e "$repo[speech]"; }
exec "$repo/.venv/bin/python" "$repo/benchmarks/outcomes/whole_calls.py" "$@"
