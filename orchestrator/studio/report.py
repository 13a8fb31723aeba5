"""The import report (IMPORT_REPORT.md): what was mapped, and what was not or needs a person's review."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from orchestrator.studio.flow_text import one_line


class Finding(StrEnum):
    """What a report item is about."""

    INTENT = "intent"
    NAME = "name to review"
    FIELD = "capture field"
    SKIP = "Gather the AI's callers skip"
    LANGUAGE = "caller's language"
    ROUTE = "route"
    FALLBACK = "fallback"
    HUMAN_ROUTE = "human route"
    PATCH = "patched flow"
    FLOW_SID = "flow SID"
    PUBLIC_URL = "public URL"
    UNKNOWN_WIDGET = "unknown widget"
    PLACEHOLDER = "placeholder"
    TEMPLATED_SID = "templated SID"
    OTHER_GATHER = "other Gather"
    LOOP = "loop back to the Gather"
    OTHER_SPLIT = "split on another variable"
    DEAD_END = "branch that ends the call"
    NOT_CARRIED = "not carried over"
    GATHER_OUTPUT = "reads the Gather's result"
    BROKEN_LINK = "transition to a missing widget"
    REVIEW = "to review"


@dataclass(frozen=True)
class ReportItem:
    finding: Finding
    subject: str  # the widget, intent or route concerned
    detail: str


@dataclass
class Findings:
    """The report's items, in the order the import comes upon them."""

    mapped: list[ReportItem] = field(default_factory=list)
    not_mapped: list[ReportItem] = field(default_factory=list)  # left as it was, dropped, or needing review

    def done(self, finding: Finding, subject: str, detail: str) -> None:
        self.mapped.append(ReportItem(finding, subject, one_line(detail)))

    def note(self, finding: Finding, subject: str, detail: str) -> None:
        self.not_mapped.append(ReportItem(finding, subject, one_line(detail)))

    def report(self, *, source: str, gather: str, redirect: str) -> ImportReport:
        return ImportReport(source, gather, redirect, tuple(self.mapped), tuple(self.not_mapped))


@dataclass(frozen=True)
class ImportReport:
    source: str
    gather: str
    redirect: str
    mapped: tuple[ReportItem, ...]
    not_mapped: tuple[ReportItem, ...]  # left as it was, dropped, or needing a person's review

    def findings(self) -> set[Finding]:
        return {item.finding for item in (*self.mapped, *self.not_mapped)}

    def render(self) -> str:
        """The report as Markdown (which also reads as plain text)."""
        lines = [
            f"# Studio import of {self.source}",
            "",
            (
                f"The Gather `{self.gather}` is replaced by the TwiML Redirect `{self.redirect}` (our voice webhook);"
                f" `{self.gather}` stays in the flow as the legacy path (the redirect's `timeout` and `fail`,"
                " and the callers the rollout keeps on the legacy arm)."
            ),
            "",
            "## Mapped",
            "",
            *_bullets(self.mapped),
            "",
            "## Not mapped, or to review",
            "",
            *(_bullets(self.not_mapped) or ["- nothing"]),
            "",
            "## Next steps",
            "",
            (
                "1. Review the intent descriptions and examples in `routing.toml`: they are generated from the menu's"
                " friendly names, matched words and prompt, and the AI classifies callers by them."
            ),
            (
                "2. Replace every value marked PLACEHOLDER in `routing.toml` (and the flow SID in the redirect URL of"
                " `flow.patched.json`, or import again with `--flow-sid`)."
            ),
            (
                "3. `orchestrator check-config routing.toml`, then paste `flow.patched.json` into the Studio flow"
                " (Flow JSON editor) and publish it."
            ),
            "",
        ]
        return "\n".join(lines)


def _bullets(items: Iterable[ReportItem]) -> list[str]:
    return [f"- **{item.finding}** `{item.subject}`: {item.detail}" for item in items]
