"""The offline engine: webrtcvad, Whisper and Piper for ears and voice, a numpy intent classifier, slot
extraction, and the dialogue that words the conversation."""
from orchestrator.engines.offline.engine import OfflineConnector, load_intent_model, model_file_for
from orchestrator.engines.offline.intent_model import IntentModel, IntentModelError, LabelledCall
from orchestrator.engines.offline.speech import SpeechSynthesizer, SpeechUnavailable, speech_support
from orchestrator.engines.offline.transcript import clean_transcript

__all__ = [
    "IntentModel",
    "IntentModelError",
    "LabelledCall",
    "OfflineConnector",
    "SpeechSynthesizer",
    "SpeechUnavailable",
    "clean_transcript",
    "load_intent_model",
    "model_file_for",
    "speech_support",
]
