"""The offline engine: webrtcvad, Whisper and Piper for ears and voice, a numpy intent classifier, slot
extraction, and the dialogue that words the conversation.

Each name below is loaded on first use (PEP 562): `speech` reports a missing speech extra instead of
failing, so importing it, and this package with it, must not load numpy or the engine.
"""
from importlib import import_module

# The module of this package that defines each name it exports.
_HOME_OF = {
    "IntentModel": "intent_model",
    "IntentModelError": "intent_model",
    "LabelledCall": "intent_model",
    "ListeningFor": "speech",
    "OfflineConnector": "engine",
    "SpeechRecognizer": "speech",
    "SpeechSynthesizer": "speech",
    "SpeechUnavailable": "speech",
    "clean_transcript": "transcript",
    "load_intent_model": "engine",
    "model_file_for": "engine",
    "speech_support": "speech",
}
__all__ = list(_HOME_OF)


def __getattr__(name: str) -> object:
    if name not in _HOME_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOME_OF[name]}"), name)
