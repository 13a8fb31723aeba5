"""The AI front desk orchestrator: configuration, sessions and the handoff back to Twilio."""
