"""The terminal table of an eval: parity, per-intent precision and recall, the confusion matrix."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from orchestrator.replay.scoring import EvalSummary


def print_summary(summary: EvalSummary, console: Console | None = None) -> None:
    console = console or Console()
    figures = summary.to_json()
    timing = figures["time_to_decision_ms"]
    verdict = "[green]passed[/]" if figures["passed"] else "[red]below[/]"
    console.print(
        f"[bold]intent parity {figures['parity']:.1%}[/] on {figures['calls']} calls "
        f"({figures['engine']} engine, {figures['mode']}; {verdict} the minimum {figures['min_parity']:.0%}); "
        f"the engine proposed the right intent in {figures['proposal_parity']:.1%}; "
        f"time to decision p50 {timing['p50']:.0f} ms, p95 {timing['p95']:.0f} ms"
    )
    fallbacks = ", ".join(f"{count} {reason}" for reason, count in figures["fallbacks"].items())
    if fallbacks or figures["no_decision"]:
        console.print(f"fallbacks: {fallbacks or 'none'}; no decision: {figures['no_decision']}")
    flex = figures["flex"]
    if flex["compared"]:
        console.print(f"Flex: the same task for {flex['same_task']} of {flex['compared']} calls with a past task")
    for reason, count in figures["skipped"].items():
        console.print(f"skipped {count}: {reason}")
    per_intent = Table(title="per intent")
    for column in ("intent", "precision", "recall", "calls"):
        per_intent.add_column(column, justify="left" if column == "intent" else "right")
    for intent, row in figures["per_intent"].items():
        per_intent.add_row(intent, f"{row['precision']:.2f}", f"{row['recall']:.2f}", str(row["support"]))
    console.print(per_intent)
    confusion = figures["confusion"]
    labels = sorted(set(confusion) | {p for row in confusion.values() for p in row})
    matrix = Table(title="confusion (rows: expected; columns: predicted, numbered as the rows)")
    matrix.add_column("expected")
    for number in range(1, len(labels) + 1):
        matrix.add_column(str(number), justify="right")
    for number, expected in enumerate(labels, 1):
        row = confusion.get(expected, {})
        matrix.add_row(f"{number} {expected}", *(str(row.get(label, "·")) for label in labels))
    console.print(matrix)
    for call in figures["disagreements"][:20]:
        confidence = "" if call["confidence"] is None else f" ({call['confidence']:.2f})"
        console.print(f"- {call['call_id']}: expected {call['expected']}, got {call['predicted']}{confidence}: "
                      f"“{call['words'][:140]}”", markup=False)
