"""Studio: a flow's menu imported as a routing config and a patched flow; execution exports read as a corpus."""

from orchestrator.studio.executions import read_studio_executions
from orchestrator.studio.flow import StudioImportError
from orchestrator.studio.importer import ImportResult, import_flow, write_import
from orchestrator.studio.patch import DEFAULT_PUBLIC_URL
from orchestrator.studio.report import Finding

__all__ = [
    "DEFAULT_PUBLIC_URL",
    "Finding",
    "ImportResult",
    "StudioImportError",
    "import_flow",
    "read_studio_executions",
    "write_import",
]
