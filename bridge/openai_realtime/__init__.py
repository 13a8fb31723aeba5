"""The OpenAI Realtime GA client: its events, settings and connection."""
from bridge.openai_realtime.client import (
    AUDIO_DELTA_CLASSES,
    AUDIO_TRANSCRIPT_DELTA_EVENT,
    CLIENT_EVENT_ADAPTER,
    SERVER_EVENT_ADAPTER,
    RealtimeConnection,
    RealtimeConnectionClosed,
    RealtimeFailure,
    RealtimeSettings,
    ServerEvent,
    ToolCallCollector,
    error_of,
    joined_base64,
    open_realtime,
    reraise_lone,
)

__all__ = [
    "AUDIO_DELTA_CLASSES",
    "AUDIO_TRANSCRIPT_DELTA_EVENT",
    "CLIENT_EVENT_ADAPTER",
    "SERVER_EVENT_ADAPTER",
    "RealtimeConnection",
    "RealtimeConnectionClosed",
    "RealtimeFailure",
    "RealtimeSettings",
    "ServerEvent",
    "ToolCallCollector",
    "error_of",
    "joined_base64",
    "open_realtime",
    "reraise_lone",
]
