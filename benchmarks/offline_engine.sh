#!/usr/bin/env bash
# The offline engine's figures, in one run: text-mode intent accuracy (config alone, and 2-fold with the
# development corpus) with the confusion matrix; paraphrases and unserved needs (the persona set's needs);
# audio-mode accuracy and word error rate; per-turn latency through the live engine (one call, then four at
# once); `orchestrator eval` on the corpus; and the installed size of the default install and of the
# `speech` extra, each in a fresh venv.
#
#   benchmarks/offline_engine.sh            # everything (about 10 minutes, most of it the two installs)
#   SKIP_INSTALL_SIZE=1 benchmarks/offline_engine.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
corpus="${CORPUS:?set CORPUS to a labelled corpus (JSONL, see the README) and BANKING77 to its folder if you have it}"
config="${CONFIG:-$repo/examples/harper_valley_bank.toml}"
py="$repo/.venv/bin/python"
[ -x "$py" ] || { python3 -m venv "$repo/.venv" && "$repo/.venv/bin/pip" install -q -e "$repo[speech]"; }
mkdir -p "$here/results"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"

echo "== text mode: intent accuracy, calibration, confusion =="
"$py" "$here/offline_text_accuracy.py" --corpus "$corpus" --config "$config" ${BANKING77:+--banking77 "$BANKING77"} --json "$here/results/offline-text-$stamp.json"
echo
echo "== paraphrases and needs no intent serves (persona needs, BANKING77), with and without the sentence embedding =="
"$py" "$here/offline_paraphrase_accuracy.py" ${BANKING77:+--banking77 "$BANKING77"} --json "$here/results/offline-paraphrase-$stamp.json"
echo
echo "== orchestrator eval (the config's own model: every call is held out) =="
"$repo/.venv/bin/orchestrator" eval "$corpus" --config "$config" --engine offline \
  --summary "$here/results/offline-eval-$stamp.json" || true
echo
echo "== audio mode: Piper caller -> VAD -> Whisper tiny.en -> classifier =="
"$py" "$here/offline_audio_accuracy.py" --corpus "$corpus" --config "$config" --json "$here/results/offline-audio-$stamp.json"
echo
echo "== per-turn latency through the engine, real-time callers =="
"$py" "$here/offline_turn_latency.py" --corpus "$corpus" --config "$config" --calls 12 --concurrency 1 \
  --json "$here/results/offline-latency-1-$stamp.json"
"$py" "$here/offline_turn_latency.py" --corpus "$corpus" --config "$config" --calls 8 --concurrency 4 \
  --json "$here/results/offline-latency-4-$stamp.json"

if [ -z "${SKIP_INSTALL_SIZE:-}" ]; then
  echo
  echo "== installed size (fresh venvs; site-packages, pip and setuptools included) =="
  scratch="$(mktemp -d)"
  trap 'rm -rf "$scratch"' EXIT
  for extra in "" "[speech]"; do
    python3 -m venv "$scratch/venv"
    "$scratch/venv/bin/pip" install -q "$repo$extra" 2> >(grep -v "is ignored: it is neither" >&2)
    size="$(du -sm "$scratch/venv/lib/python3.11/site-packages" | cut -f1)"
    torch="$("$scratch/venv/bin/pip" show torch >/dev/null 2>&1 && echo "torch INSTALLED" || echo "no torch")"
    echo "  install '.${extra}': ${size} MB, ${torch}"
    rm -rf "$scratch/venv"
  done
fi
