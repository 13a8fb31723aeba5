"""The plain-text report the `orchestrator call` command prints after a simulated call. No network.

`render_call(result, record)` puts together what the simulated caller saw (`CallResult`) and what the
server says it decided (`record`, the JSON of GET /calls/{sid}): the transcript (the caller's lines, and
the agent's as the caller heard them when `conversation` is given), each pass's state path and decision,
the captured data, protocol violations and the final TwiML, indented. `render_verdict` adds a persona's
verdict. The record comes over the wire, so every field is read defensively: a missing or odd value prints
as "-" instead of failing the report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from xml.etree import ElementTree

from orchestrator.testing import CallResult, Verdict

__all__ = ["render_call", "render_verdict"]

ARROW = " → "
INDENT = "  "


def render_call(
    result: CallResult, record: dict | None, conversation: Sequence[tuple[float, str]] | None = None
) -> str:
    """The report as plain text (no colour codes), one trailing newline. `conversation` is both sides,
    (time, "agent: words" | "caller: words"), instead of the caller's lines alone."""
    origin = result.media_opened_at if result.media_opened_at is not None else _first_time(result)
    lines = [f"Call {result.call_sid}", *_call_lines(result, origin), ""]
    said = sorted(result.transcript if conversation is None else conversation, key=lambda entry: entry[0])
    lines.append("Transcript")
    if said:
        lines += [f"{INDENT}{_seconds(at - origin):>7}  {line}" for at, line in said]
    else:
        lines.append(INDENT + ("(the caller said nothing)" if conversation is None else "(nobody said anything)"))
    lines += ["", *_record_lines(record), ""]
    if result.violations:
        lines.append(f"Protocol violations ({len(result.violations)})")
        lines += [
            f"{INDENT}{_seconds(violation.at - origin):>7}  {violation.kind}: {violation.excerpt}"
            for violation in result.violations
        ]
        lines.append("")
    lines.append("Final TwiML")
    if result.final_twiml:
        lines += [INDENT + line for line in _pretty_twiml(result.final_twiml).splitlines()]
    else:
        lines.append(f"{INDENT}(none)")
    return "\n".join(lines) + "\n"


def render_verdict(verdict: Verdict) -> str:
    """A persona's verdict: the route against the expected one, each expected field, time and questions."""
    right = "right" if verdict.route_right else "WRONG"
    lines = [
        f"Verdict (persona {verdict.persona})",
        f"{INDENT}route: {verdict.route or '(no decision)'}, expected {verdict.expected_route}: {right}"
        f" (reason {_text(verdict.reason)}, intent {_text(verdict.intent)})",
        f"{INDENT}time to decision: {_number(verdict.decided_after_s)} s",
        f"{INDENT}questions asked: {verdict.questions}",
    ]
    if verdict.urgent:
        lines.append(f"{INDENT}urgent: yes{', ended in VOICEMAIL' if verdict.urgent_in_voicemail else ''}")
    for field in verdict.fields:
        captured = "(not captured)" if field.captured is None else repr(field.captured)
        expected = " or ".join(repr(value) for value in field.expected)
        lines.append(f"{INDENT}{field.field}: {captured}, expected {expected}: {'right' if field.right else 'WRONG'}")
    return "\n".join(lines) + "\n"


def _first_time(result: CallResult) -> float:
    times = [at for at, _ in result.transcript] + [violation.at for violation in result.violations]
    return min(times, default=0.0)


def _call_lines(result: CallResult, origin: float) -> list[str]:
    lines = [f"{INDENT}webhook: HTTP {result.webhook_status or 'no answer'}"]
    if result.stream_url is None:
        lines.append(f"{INDENT}stream: none (the TwiML opened no Media Stream)")
        return lines
    if result.stream_rejected_status is not None:
        lines.append(f"{INDENT}stream: {result.stream_url} refused with HTTP {result.stream_rejected_status}")
    elif result.stream_sid is None:
        lines.append(f"{INDENT}stream: {result.stream_url} did not open")
    else:
        closed = "still open"
        if result.media_closed_at is not None:
            closed = (
                f"closed by the {result.media_closed_by} (code {result.close_code}) "
                f"after {_seconds(result.media_closed_at - origin)}"
            )
        lines.append(f"{INDENT}stream: {result.stream_sid}, {closed}")
    if result.custom_parameters:
        parameters = ", ".join(f"{name}={value}" for name, value in result.custom_parameters.items())
        lines.append(f"{INDENT}parameters: {parameters}")
    clears = f"{result.clears} clear{'s' if result.clears != 1 else ''}"
    echoes = f"{len(result.marks)} mark echo{'es' if len(result.marks) != 1 else ''}"
    lines.append(
        f"{INDENT}agent audio: {result.audio_received_ms:.0f} ms received, "
        f"{result.audio_played_ms:.0f} ms played, "
        f"{result.audio_cleared_ms:.0f} ms cleared ({clears}), {echoes}"
    )
    if result.action_url is not None:
        answer = "not requested" if result.action_status is None else f"HTTP {result.action_status}"
        lines.append(f"{INDENT}action: {result.action_url}: {answer}")
    return lines


def _record_lines(record: Mapping[str, Any] | None) -> list[str]:
    if not isinstance(record, Mapping):
        return ["Server record: not available"]
    lines = ["Server record"]
    visited = record.get("visited_nodes")
    if isinstance(visited, list) and visited:
        lines.append(f"{INDENT}visited nodes: {', '.join(str(node) for node in visited)}")
    passes = record.get("passes")
    if not isinstance(passes, list) or not passes:
        lines.append(f"{INDENT}(no passes recorded)")
        return lines
    for index, one_pass in enumerate(passes, start=1):
        lines += _pass_lines(one_pass if isinstance(one_pass, Mapping) else {}, index)
    return lines


def _pass_lines(one_pass: Mapping[str, Any], index: int) -> list[str]:
    number = one_pass.get("number", index)
    entry = one_pass.get("entry_node")
    lines = [
        f"{INDENT}Pass {_text(number)} (arm {_text(one_pass.get('arm'))}, "
        f"entry node {_text(entry) if entry else 'none'}, "
        f"answered route {_text(one_pass.get('answered_route'))})"
    ]
    deeper = INDENT * 2
    outcome = one_pass.get("outcome")
    outcome = outcome if isinstance(outcome, Mapping) else {}
    path = outcome.get("state_path")
    if isinstance(path, list) and path:
        lines.append(f"{deeper}{ARROW.join(_text(state) for state in path)}")
    else:
        lines.append(f"{deeper}(no state path recorded)")
    decision = one_pass.get("decision")
    if isinstance(decision, Mapping):
        lines.append(
            f"{deeper}decision: route {_text(decision.get('route'))} ({_text(decision.get('route_kind'))}), "
            f"reason {_text(decision.get('reason'))}, intent {_text(decision.get('intent'))}, "
            f"confidence {_number(decision.get('confidence'))}, "
            f"after {_number(decision.get('decided_after_s'))} s"
        )
        if decision.get("proposed_route"):
            lines.append(f"{deeper}proposed route: {_text(decision.get('proposed_route'))}")
        lines.append(f"{deeper}summary: {_text(decision.get('summary'))}")
        captured = decision.get("captured")
        if isinstance(captured, Mapping) and captured:
            lines.append(f"{deeper}captured:")
            lines += [f"{deeper}{INDENT}{name}: {_text(value)}" for name, value in captured.items()]
        else:
            lines.append(f"{deeper}captured: nothing")
    else:
        lines.append(f"{deeper}decision: none")
    if outcome:
        notes = outcome.get("notes")
        notes_text = "; ".join(_text(note) for note in notes) if isinstance(notes, list) and notes else "none"
        lines.append(
            f"{deeper}outcome: {_text(outcome.get('outcome'))}, faults {_text(outcome.get('faults'))}, "
            f"notes {notes_text}"
        )
    return lines


def _pretty_twiml(twiml: str) -> str:
    try:
        root = ElementTree.fromstring(twiml)
    except ElementTree.ParseError:
        return twiml.strip()  # shown as received: it is what Twilio would have had to execute
    ElementTree.indent(root, space=INDENT)
    return ElementTree.tostring(root, encoding="unicode")


def _text(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _text(value)
    return f"{value:.2f}"


def _seconds(value: float) -> str:
    return f"{value:.2f} s"
