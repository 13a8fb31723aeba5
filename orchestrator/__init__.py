"""The AI front desk orchestrator: configuration, sessions and the handoff back to Twilio.

The packages below are its parts; `orchestrator.composition` is the one place that wires them together.
"""

__all__: list[str] = []
