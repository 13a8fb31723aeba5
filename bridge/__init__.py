"""Wire protocols and nothing of our business: `bridge.websocket` (WebSocket connections under Trio),
`bridge.twilio` (Media Streams messages, signatures, µ-law audio, the REST client) and
`bridge.openai_realtime` (the Realtime GA client). Import from those subpackages.
"""

__all__: list[str] = []
