"""`orchestrator engine fit` and `orchestrator eval` as a user runs them: files in, figures and exit codes out."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.config.routing import load_routing_config
from orchestrator.engines.offline.engine import load_intent_model

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
BANK = REPO / "examples" / "harper_valley_bank.toml"
DEV = REPO.parent / "shared" / "data" / "harper_valley" / "dev.jsonl"

needs_corpus = pytest.mark.skipif(not DEV.is_file(), reason="the shared development corpus is not here")


def orchestrator(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY" and not k.startswith("ORCHESTRATOR_")}
    return subprocess.run([str(BIN / "orchestrator"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def small_corpus(folder: Path) -> Path:
    lines = [
        {"call_id": "a1", "turns": [{"role": "caller", "text": "i lost my debit card"}], "expected": {"intent": "replace_card"}},
        {"call_id": "a2", "turns": [{"role": "caller", "text": "what time do you close on friday"}],
         "expected": {"intent": "get_branch_hours"}},
        {"call_id": "a3", "turns": [{"role": "caller", "text": "i want to know how much money is in my savings"}],
         "expected": {"intent": "check_balance"}},
        {"call_id": "a4", "turns": [{"role": "caller", "text": "hello"}], "expected": {"intent": "open_account"}},
    ]
    path = folder / "calls.jsonl"
    text = "\n".join(json.dumps(line) for line in lines) + "\nnot json at all\n" + json.dumps({"call_id": "x"}) + "\n"
    path.write_text(text, encoding="utf-8")
    return path


def test_eval_reports_parity_writes_the_summary_and_gates_on_min_parity(tmp_path):
    corpus = small_corpus(tmp_path)
    done = orchestrator("eval", str(corpus), "--config", str(BANK), "--engine", "offline",
                        "--summary", str(tmp_path / "summary.json"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["calls"] == 3 and summary["parity"] == 1.0
    assert summary["per_intent"]["replace_card"] == {"precision": 1.0, "recall": 1.0, "support": 1}
    assert summary["confusion"]["check_balance"] == {"check_balance": 1}
    assert summary["skipped"] == {"intent not in the config": 1, "unreadable lines": 2}
    assert "intent parity 100.0% on 3 calls" in done.stdout
    assert "calls.jsonl:5: skipped" in done.stderr and "Traceback" not in done.stderr

    strict = orchestrator("eval", str(corpus), "--config", str(BANK), "--min-parity", "1.01", cwd=tmp_path)
    assert strict.returncode == 1


def test_eval_explains_bad_input_without_a_traceback(tmp_path):
    missing = orchestrator("eval", str(tmp_path / "nope.jsonl"), "--config", str(BANK), cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr and "nope.jsonl" in missing.stderr
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"call_id": "b", "turns": [{"role": "caller", "text": "hi"}],
                                 "expected": {"intent": "sell_house"}}) + "\n", encoding="utf-8")
    none_known = orchestrator("eval", str(other), "--config", str(BANK), cwd=tmp_path)
    assert none_known.returncode == 2 and "no call of the corpus has an intent of this config" in none_known.stderr
    realtime = orchestrator("eval", str(small_corpus(tmp_path)), "--config", str(BANK), "--engine", "realtime",
                            cwd=tmp_path)
    assert realtime.returncode == 2 and "OPENAI_API_KEY" in realtime.stderr and "Traceback" not in realtime.stderr


@needs_corpus
def test_fit_writes_a_model_the_config_can_point_to_and_eval_uses_it(tmp_path):
    config = tmp_path / "bank.toml"
    shutil.copy(BANK, config)
    done = orchestrator("engine", "fit", str(DEV), "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    model_file = tmp_path / "bank.model.json"
    assert model_file.is_file() and "fit on 8 intents" in done.stdout and "40 of 40 calls" in done.stdout
    assert 'intent_model = "bank.model.json"' in done.stdout
    config.write_text(config.read_text(encoding="utf-8") + '\n[engine]\nintent_model = "bank.model.json"\n',
                      encoding="utf-8")
    model = load_intent_model(load_routing_config(config))
    assert model.predict("i need to order more checks").intent == "order_checks"
    evaluated = orchestrator("eval", str(small_corpus(tmp_path)), "--config", str(config), cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr


def test_a_config_pointing_at_a_missing_model_file_is_a_clear_error(tmp_path):
    config = tmp_path / "bank.toml"
    config.write_text(BANK.read_text(encoding="utf-8") + '\n[engine]\nintent_model = "gone.model.json"\n',
                      encoding="utf-8")
    done = orchestrator("eval", str(small_corpus(tmp_path)), "--config", str(config), cwd=tmp_path)
    assert done.returncode == 2 and "engine.intent_model" in done.stderr and "Traceback" not in done.stderr


def test_eval_with_audio_streams_each_recording_through_the_live_path(tmp_path):
    from bridge.twilio.mulaw import mulaw_to_wav, silence
    from orchestrator.engines.offline.engine import load_offline_speech

    speech = load_offline_speech().speech
    if speech is None:
        pytest.skip("the speech extra is not installed")
    mulaw_to_wav(silence(500) + speech.synthesizer.synthesize("Hi, I lost my debit card, I need a new one."),
                 tmp_path / "card.wav")
    lines = [
        {"call_id": "rec1", "turns": [{"role": "caller", "text": "hi i lost my debit card i need a new one"}],
         "expected": {"intent": "replace_card", "audio": "card.wav"}},
        {"call_id": "txt1", "turns": [{"role": "caller", "text": "what time do you close on friday"}],
         "expected": {"intent": "get_branch_hours"}},
    ]
    corpus = tmp_path / "recorded.jsonl"
    corpus.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    done = orchestrator("eval", str(corpus), "--config", str(BANK), "--engine", "offline", "--audio",
                        "--summary", str(tmp_path / "s.json"), "--report", str(tmp_path / "r.html"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["mode"] == "audio and text" and summary["calls"] == 2 and summary["parity"] == 1.0
    assert summary["time_to_decision_ms"]["max"] > 0
    assert (tmp_path / "r.html").read_text(encoding="utf-8").count("<svg") == 1


ACME_IVR = REPO.parent / "shared" / "fixtures" / "studio" / "acme_plumbing_ivr.json"


@pytest.mark.skipif(not ACME_IVR.is_file(), reason="the shared Studio fixtures are not here")
def test_a_studio_flow_imported_then_replayed_from_its_execution_export(tmp_path):
    """The migration chain: import the IVR, then replay Studio executions of it against the new config."""
    imported = orchestrator("studio", "import", str(ACME_IVR), "--out", str(tmp_path / "migration"),
                            "--flow-sid", "FW" + "ab" * 16, cwd=tmp_path)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    config = tmp_path / "migration" / "routing.toml"

    def execution(sid: str, words: str, taken: str) -> dict:
        steps = [("Trigger", "main_menu"), ("main_menu", "route_speech"), ("route_speech", taken)]
        return {"sid": sid, "context": {"trigger": {"call": {"CallSid": "CA" + sid[-1] * 32, "From": "+15005550006"}},
                                        "widgets": {"main_menu": {"SpeechResult": words}}},
                "steps": [{"transitioned_from": a, "transitioned_to": b, "name": "next"} for a, b in steps]}

    export = tmp_path / "executions.json"
    export.write_text(json.dumps({"executions": [
        execution("FN1", "there is a leak and my kitchen is flooding", "emergency_to_flex"),
        execution("FN2", "i have a question about my bill", "billing_to_flex"),
    ]}), encoding="utf-8")
    done = orchestrator("eval", str(export), "--studio-executions", "--gather", "main_menu", "--flow", str(ACME_IVR),
                        "--config", str(config), "--engine", "offline", "--summary", str(tmp_path / "s.json"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["calls"] == 2 and summary["parity"] == 1.0
    assert set(summary["per_intent"]) == {"emergency", "billing"}
