"""The call machine drawn from the same table that runs it."""
from __future__ import annotations

from typing import Any

from transitions.extensions.diagrams import GraphMachine

from machines.call_machine import build_state_machine


class _DiagramModel:
    """Stand-in model: the diagram shows the machine, not any one call."""


def call_graph(graph_engine: str) -> Any:
    machine = build_state_machine(machine_class=GraphMachine, graph_engine=graph_engine,
                                  show_conditions=True, title="A call's life")
    model = _DiagramModel()
    machine.add_model(model)
    return model.get_graph()  # type: ignore[attr-defined]


def call_mermaid() -> str:
    """Mermaid source of the call machine; `diagrams/call.mmd` must equal this."""
    source: str = call_graph("mermaid").draw(None)
    return source.rstrip("\n") + "\n"
