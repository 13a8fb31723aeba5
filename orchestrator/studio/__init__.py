"""Studio: a flow's menu imported as a routing config and a patched flow; execution exports read as a corpus."""

from orchestrator.studio.command import add_studio_arguments
from orchestrator.studio.executions import read_studio_executions
from orchestrator.studio.flow import StudioImportError
from orchestrator.studio.importer import ImportResult, import_flow, write_import
from orchestrator.studio.report import Finding

__all__ = [
    "Finding",
    "ImportResult",
    "StudioImportError",
    "add_studio_arguments",
    "import_flow",
    "read_studio_executions",
    "write_import",
]
