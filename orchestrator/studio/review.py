"""What the report says beyond the menu's mapping: the flow around the menu, and the patch with what it asks
of the person who publishes it."""

from __future__ import annotations

import re
from collections.abc import Sequence

from orchestrator.studio.details import CaptureField, SkippedPath
from orchestrator.studio.flow import SPLIT, WIDGET_EVENTS, Flow
from orchestrator.studio.flow_text import PLACEHOLDER, short, strings
from orchestrator.studio.menu import MENU_EVENTS, Menu, reads_gather_result
from orchestrator.studio.patch import (
    DEFAULT_PUBLIC_URL,
    LEGACY_ARM,
    REDIRECT_TIMEOUT_SECONDS,
    VOICE_WEBHOOK_PATH,
    PatchedFlow,
)
from orchestrator.studio.report import Finding, Findings, ReportItem

_SID_KEYS = re.compile(r"(?i)(.*_sid|sid|workflow|channel)$")


def review_flow(flow: Flow, menu: Menu, findings: Findings, fields: Sequence[CaptureField] = ()) -> None:
    """Notes on the widgets the import leaves as they are but a person should know about."""
    asks = {g: [f.name for f in fields if g in f.gathers] for g in menu.other_gathers}
    for name, way_on in menu.passed:
        findings.note(
            Finding.OTHER_GATHER,
            name,
            f"every choice of this menu leads on to {way_on}: it sets something (the caller's language?) and routes"
            f" nothing, so it stays in front of the AI and the menu after it, {menu.gather}, is the one replaced",
        )
    for name in menu.other_gathers:
        fields_asked = f" (it asks for {', '.join(asks[name])}: capture fields now)" if asks[name] else ""
        findings.note(
            Finding.OTHER_GATHER,
            name,
            f"another Gather; only the menu {menu.gather} is replaced, this one is left as it is{fields_asked}",
        )
    for name in menu.unreachable_gathers:
        findings.note(Finding.OTHER_GATHER, name, "a Gather no incoming call reaches: left as it is")
    for event, target in menu.direct:
        state = flow.states[target]
        if state.type == SPLIT:
            read = short(state.properties.get("input"))
            findings.note(
                Finding.OTHER_SPLIT,
                target,
                f"the Gather's {event} leads to this split on {read}, not on the Gather's SpeechResult or Digits: no intents from it",
            )
        else:
            findings.note(
                Finding.REVIEW,
                menu.gather,
                f"every {event} answer goes straight to {target} (no split): that path has no menu choices",
            )
    for event in MENU_EVENTS:
        if flow.states[menu.gather].next_on(event) is None:
            findings.note(
                Finding.REVIEW,
                menu.gather,
                f"the Gather's {event} transition leads nowhere: the old menu took no {event} answers",
            )
    for name in flow.order:
        state = flow.states[name]
        if state.type not in WIDGET_EVENTS:
            findings.note(
                Finding.UNKNOWN_WIDGET, name, f"widget type {state.type!r} is unknown to the importer: left as it is"
            )
        for transition in state.transitions:
            if transition.next is not None and transition.next not in flow.states:
                findings.note(
                    Finding.BROKEN_LINK,
                    name,
                    f"{transition.event} leads to {transition.next!r}, which is not a widget (Studio will refuse the flow)",
                )
        for path, text in strings(state.properties, f"{name}.properties"):
            for placeholder in PLACEHOLDER.findall(text):
                finding = Finding.TEMPLATED_SID if _SID_KEYS.match(path.rsplit(".", 1)[-1]) else Finding.PLACEHOLDER
                item = ReportItem(
                    finding, name, f"{path} holds {placeholder}: fill it in before importing the flow into Studio"
                )
                if item not in findings.not_mapped:
                    findings.not_mapped.append(item)
        if name not in (menu.gather, *menu.splits) and reads_gather_result(state, menu.gather):
            findings.note(
                Finding.GATHER_OUTPUT,
                name,
                f"reads {{{{widgets.{menu.gather}.…}}}}, which is empty when the call comes back from the AI:"
                " read the redirect's captured fields instead",
            )


def review_patch(
    flow: Flow,
    patched: PatchedFlow,
    findings: Findings,
    *,
    gather: str,
    no_match: str | None,
    flex_widgets: list[str],
    flow_sid: str,
    flow_sid_is_placeholder: bool,
    base_url: str,
    skipped_paths: Sequence[SkippedPath] = (),
) -> None:
    """What the patch did, and what it leaves for the person who publishes it."""
    redirect, arm_split, intent_split = patched.added.redirect, patched.added.arm_split, patched.added.intent_split
    findings.done(
        Finding.PATCH,
        redirect,
        f"new TwiML Redirect to {base_url}{VOICE_WEBHOOK_PATH} (POST, timeout {REDIRECT_TIMEOUT_SECONDS} s:"
        f" far above the triage budget, and short so executions of calls the AI sent elsewhere end soon);"
        f" return → {arm_split}, timeout and fail → {gather}",
    )
    findings.done(
        Finding.PATCH,
        arm_split,
        f"new Split on {{{{widgets.{redirect}.arm}}}}: callers the rollout keeps on the legacy path"
        f" ({LEGACY_ARM}) → {gather}, the AI's callers → {intent_split}",
    )
    ends = f"noMatch → {no_match}" if no_match else "noMatch leads nowhere (the call ends, as it did)"
    findings.done(
        Finding.PATCH,
        intent_split,
        f"new Split on {{{{widgets.{redirect}.intent}}}}: one branch per intent to the original widget; {ends}",
    )
    findings.done(
        Finding.PATCH, ", ".join(patched.repointed), f"transitions that led to {gather} now lead to {redirect}"
    )
    copy_of = {original: copy for copy, original in patched.added.copies.items()}
    for path in skipped_paths:
        given = ", ".join(f"{{{{widgets.{redirect}.{name}}}}}" for name in path.fields)
        findings.done(
            Finding.SKIP,
            ", ".join(path.gathers),
            f"intent `{path.intent}`: new Splits on {given}; a call the AI brings back with every one given skips"
            f" {', '.join(path.skipped)} and goes on at {copy_of.get(path.resume, path.resume)};"
            f" with one missing it takes the old path from {path.start}",
        )
        for name in path.gathers:
            readers = path.readers[name]
            copied = [f"{w} (copied as {copy_of[w]})" if w in copy_of else w for w in readers]
            fields = " and ".join(f"{{{{widgets.{redirect}.{field}}}}}" for field in path.answers[name])
            findings.done(
                Finding.SKIP,
                name,
                f"its answer is read by {', '.join(copied) or 'no later widget'}; the copies read {fields} instead"
                if readers
                else "its answer is read by no later widget",
            )
    for name, event in patched.loops:
        findings.note(
            Finding.LOOP, name, f"{event} leads back to {gather}: kept (callers there get the old menu, not the AI)"
        )
    if flow_sid_is_placeholder:
        findings.note(
            Finding.FLOW_SID,
            "flow",
            f"the flow JSON has no SID: the placeholder {flow_sid} is in the redirect URL"
            " and the studio routes; import again with --flow-sid FW…",
        )
    if base_url == DEFAULT_PUBLIC_URL:
        findings.note(
            Finding.PUBLIC_URL,
            redirect,
            f"the redirect calls the example address {base_url}: import again with --public-url",
        )
    flags = flow.raw.get("flags")
    if not (isinstance(flags, dict) and flags.get("allow_concurrent_calls") is True):
        findings.note(
            Finding.REVIEW,
            "flags",
            f"allow_concurrent_calls is off: a call the AI sends to Flex, voicemail or SIP keeps its execution waiting"
            f" on {redirect} for up to {REDIRECT_TIMEOUT_SECONDS} s, and Studio refuses the same caller meanwhile"
            " (warning 81002); turn it on",
        )
    if flex_widgets:
        findings.note(
            Finding.REVIEW,
            ", ".join(flex_widgets),
            "the AI enqueues these calls to Flex itself (same workflow, priority and timeout), so these widgets"
            " and what follows them (e.g. failedToEnqueue) run only on the legacy path",
        )
