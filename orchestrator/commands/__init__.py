"""The `orchestrator` command, one module per subcommand; `orchestrator.commands.cli:main` is its entry point
(run as `python -m orchestrator.commands.cli` by `serve --workers N`, so this package imports none of them)."""

__all__: list[str] = []
