"""The terminal table of an eval: parity, per-intent precision and recall, the confusion matrix."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from orchestrator.call_eval import EvalSummary


def print_summary(summary: EvalSummary, console: Console | None = None) -> None:
    console = console or Console()
    figures = summary.to_json()
    console.print(
        f"[bold]intent parity {figures['parity']:.1%}[/] on {figures['calls']} calls "
        f"(offline engine, text); {figures['below_min_confidence']} below the minimum confidence "
        f"{figures['min_confidence']:g} (parity {figures['parity_when_confident']:.1%} on the others); "
        f"decision p50 {figures['decide_ms_p50']:.2f} ms, p95 {figures['decide_ms_p95']:.2f} ms"
    )
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
        console.print(f"- {call['call_id']}: expected {call['expected']}, got {call['predicted']} "
                      f"({call['confidence']:.2f}): “{call['words'][:140]}”")
