"""The `orchestrator` command, one module per subcommand."""
from orchestrator.commands.cli import main

__all__ = [
    "main",
]
