"""Metrics (Prometheus) and structured logs, with secrets and phone numbers masked."""
from orchestrator.telemetry.logs import (
    call_logger,
    configure_logging,
    configure_server_logging,
    mask_phone,
    quiet_state_machine_library,
    secrets_masked_in_logs,
)
from orchestrator.telemetry.metrics import METRICS_CONTENT_TYPE, ServerMetrics
from orchestrator.telemetry.trio_tasks import live_trio_tasks

__all__ = [
    "METRICS_CONTENT_TYPE",
    "ServerMetrics",
    "call_logger",
    "configure_logging",
    "configure_server_logging",
    "live_trio_tasks",
    "mask_phone",
    "quiet_state_machine_library",
    "secrets_masked_in_logs",
]
