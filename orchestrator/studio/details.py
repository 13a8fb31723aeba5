"""Details the old IVR asked for after the menu: capture fields, and the Gathers the AI's callers can skip.

A Gather on an intent's path whose prompt asks for a detail (name, phone number, email, address,
postcode, date or time, account number…) becomes a capture field of that intent's route. Its
confirmation (a Gather after it that reads its answer back or asks "is that correct?") and the Splits on
either answer go with it.

When the intent's path starts with such Gathers (Say/Play widgets between them), and later widgets read
their answers by name, a caller the AI brings back with every one of those details can skip them: the
patch (patch.py) puts Splits on the returned values in front of the path, and copies of the widgets that
read the answers, reading the returned values instead (the originals stay for the legacy path).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

from orchestrator.studio.flow import (
    GATHER,
    SAY_PLAY,
    SPLIT,
    TRIGGER,
    WIDGET_EVENTS,
    Flow,
    State,
)
from orchestrator.studio.flow_text import one_line, snake_case, unique
from orchestrator.studio.intents import Intent
from orchestrator.studio.menu import MENU_EVENTS, Menu, menu_of, reads_gather_result
from orchestrator.studio.report import Finding, Findings

_LIQUID = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_CONFIRMS = re.compile(r"(?i)\b(correct|right|confirm|is that|is this|did you say|you said)\b")
_OFFERS_KEYS = re.compile(r"(?i)\bpress\s+\d")
_YES_OR_NO = re.compile(r"(?i)\bpress\s+\d|\byes\b|\bno\b")
# A word before the detail that says which one it is ("pickup address"), unless it is one of these.
_NOT_QUALIFIERS = frozenset(
    "a an and any are at be can could for full give is me my number of or our please say spell state tell that "
    "the this to us what where which who whole will would you your enter".split()
)
# What a prompt's verbs say about a detail that has no qualifier before it ("When should we pick you up?").
_QUALIFYING_VERBS = (
    (re.compile(r"(?i)\bpick(?:ed|ing)?[\s-]*(?:you\s+|them\s+)?up\b"), "pickup"),
    (re.compile(r"(?i)\bdrop(?:ped|ping)?[\s-]*(?:you\s+|them\s+)?off\b"), "dropoff"),
    (re.compile(r"(?i)\bdeliver"), "delivery"),
    (re.compile(r"(?i)\bappointment\b"), "appointment"),
)


@dataclass(frozen=True)
class _Kind:
    """A kind of detail a prompt can ask for."""

    asks: re.Pattern[str]
    type: str  # the field type (routing.py CapturedField)
    noun: str  # the field is named `<qualifier>_<noun>`, or `default` without a qualifier
    default: str
    qualified: bool = True  # whether a word before it names the field ("pickup address")


_KINDS = (
    _Kind(re.compile(r"(?i)\be-?mail(?:\s+address)?\b"), "email", "email", "email", qualified=False),
    _Kind(
        re.compile(r"(?i)\b(?:call\s*-?\s*back|best|contact)\s+(?:phone\s+)?number\b|\bnumber\s+(?:to|we can|where we can)\s+(?:call|reach)\s+you"),
        "phone", "number", "callback_number", qualified=False,
    ),
    _Kind(re.compile(r"(?i)\b(?:phone|telephone|mobile|cell)\s+number\b"), "phone", "number", "phone_number", qualified=False),
    _Kind(
        re.compile(r"(?i)\b(account|customer|order|policy|membership|member|booking|case|ticket|claim|invoice|"
                   r"confirmation|reference|tracking|reservation)\s+(?:number|no\b|id\b|code\b)"),
        "text", "number", "account_number",
    ),
    _Kind(re.compile(r"(?i)\b(?:post\s*code|zip(?:\s*code)?|postal\s+code)\b"), "text", "postcode", "postcode", qualified=False),
    _Kind(re.compile(r"(?i)(?<!e-)(?<!e)(?<!mail )\baddress\b|\bwhere\b"), "text", "address", "address"),
    _Kind(re.compile(r"(?i)\b(?:date of birth|birth\s*date|birthday)\b"), "date", "birth", "date_of_birth", qualified=False),
    _Kind(re.compile(r"(?i)\bdate\b|\b(?:what|which) day\b"), "date", "date", "date"),
    _Kind(re.compile(r"(?i)\btime\b|\bwhen\b"), "text", "time", "time"),
    _Kind(re.compile(r"(?i)\bname\b"), "text", "name", "caller_name"),
)


@dataclass
class CaptureField:
    name: str
    type: str
    description: str
    gathers: list[str]  # the Gathers that asked for it
    required_for: list[str] = field(default_factory=list)  # route names


@dataclass
class SkippedPath:
    """An intent's path whose Gathers a caller who gave the AI every detail skips."""

    intent: str
    start: str  # the intent's widget: where the old path starts (a detail is missing)
    gathers: list[str]  # the detail Gathers, in the order the old path asks
    skipped: list[str]  # every widget passed over: Say/Play, the Gathers, confirmations and their Splits
    resume: str  # where the call goes on once the details are known
    fields: list[str]  # the fields a returning call must carry, in order
    answers: dict[str, list[str]]  # Gather → the fields that stand for its answer
    readers: dict[str, list[str]]  # Gather → the widgets after it that read its answer
    copies: list[str]  # widgets from `resume` on that are copied to read the fields (readers, and the way to them)


@dataclass
class Details:
    fields: list[CaptureField]
    skipped_paths: list[SkippedPath]


def find_details(
    flow: Flow, menu: Menu, intents: list[Intent], resumed_routes: set[str], findings: Findings
) -> Details:
    """The capture fields the intents' paths ask for, and the paths of intents whose route resumes the
    flow (`resumed_routes`) that the AI's callers can skip."""
    by_name: dict[str, CaptureField] = {}
    asked: dict[str, list[str]] = {}  # Gather → the fields it asks for
    for intent in intents:
        for name in flow.reachable(intent.target, avoid=menu.gather):
            if name == menu.gather or flow.states[name].type != GATHER:
                continue
            if name not in asked:
                asked[name] = _fields_asked(flow, flow.states[name], by_name)
            for field_name in asked[name]:
                if intent.route not in by_name[field_name].required_for:
                    by_name[field_name].required_for.append(intent.route)
    # "Is your name {{…}}? Say yes or no": a confirmation asks for nothing new.
    confirmations = {c for gather, names in asked.items() if names for c in _answer_path(flow, gather)[2]}
    for gather in confirmations:
        for field_name in asked.pop(gather, []):
            by_name[field_name].gathers.remove(gather)
    fields = [f for f in by_name.values() if f.gathers]
    for captured in fields:
        findings.done(
            Finding.FIELD,
            captured.name,
            f"{captured.type}, asked for by {', '.join(captured.gathers)}; required for {', '.join(captured.required_for)}",
        )
    asked = {gather: names for gather, names in asked.items() if names}
    skipped_paths = []
    for intent in intents:
        path = _skippable_path(flow, menu, intent, asked, findings) if intent.route in resumed_routes else None
        if path is not None:
            skipped_paths.append(path)
    return Details(fields, skipped_paths)


def _fields_asked(flow: Flow, state: State, by_name: dict[str, CaptureField]) -> list[str]:
    """The fields a Gather's prompt asks for (none for a menu of its own, or a prompt offering keys)."""
    prompt = state.properties.get("say")
    own_menu = menu_of(flow, state.name)
    if not isinstance(prompt, str) or (own_menu is not None and len({b.target for b in own_menu.branches}) > 1):
        return []
    text = " ".join(_LIQUID.sub(" ", prompt).split())
    if _OFFERS_KEYS.search(text):
        return []
    found: list[tuple[int, str, str]] = []  # (where in the prompt, name, type)
    covered: list[tuple[int, int]] = []
    for kind in _KINDS:
        for match in kind.asks.finditer(text):
            if any(start < match.end() and match.start() < end for start, end in covered):
                continue  # "email address" is an email, not an address
            covered.append(match.span())
            found.append((match.start(), _field_name(kind, text, match), kind.type))
    names = []
    for _, name, kind_type in sorted(found):
        existing = by_name.get(name)
        if existing is not None and existing.type != kind_type:
            name = unique(name, by_name)
            existing = None
        if existing is None:
            existing = by_name[name] = CaptureField(
                name, kind_type, one_line(f"{' '.join(name.split('_')).capitalize()}, as the old IVR asked: \"{text}\""), []
            )
        if state.name not in existing.gathers:
            existing.gathers.append(state.name)
        if name not in names:
            names.append(name)
    return names


def _field_name(kind: _Kind, text: str, match: re.Match[str]) -> str:
    if kind.default == "account_number" and match.lastindex:
        return f"{match[1].lower()}_number"
    words = re.findall(r"[A-Za-z][\w'-]*", text[: match.start()])
    before = words[-1].lower() if words else ""
    qualifier = before if kind.qualified and before not in _NOT_QUALIFIERS and before.isalpha() else ""
    if kind.noun == "name":
        return f"{qualifier}_name" if qualifier in ("company", "business") else kind.default
    if not qualifier and kind.qualified:
        qualifier = next((q for verb, q in _QUALIFYING_VERBS if verb.search(text)), "")
    return snake_case(f"{qualifier} {kind.noun}", fallback=kind.default) if qualifier else kind.default


def _answer_path(flow: Flow, gather: str) -> tuple[str | None, set[str], set[str]]:
    """(the widget the call reaches once the Gather's answer is taken, or None when that is not one widget;
    the widgets in between: the Gather, its confirmation and the Splits on their answers; the confirmations)."""
    taken, confirmations = {gather}, set()
    ways_on: set[str] = set()
    queue = deque(_answer_targets(flow.states[gather]))
    while queue:
        name = queue.popleft()
        if name in taken or name not in flow.states:
            continue
        state = flow.states[name]
        if flow.first_action(name) in taken:
            continue  # "Sorry, let's try again" back to a Gather of this detail
        if state.type == SPLIT and any(reads_gather_result(state, g) for g in (gather, *confirmations)):
            taken.add(name)
            queue.extend(t.next for t in state.transitions if t.next)
        elif state.type == GATHER and not confirmations and _confirms(state, gather):
            taken.add(name)
            confirmations.add(name)
            queue.extend(_answer_targets(state))
        else:
            ways_on.add(name)
    way_on = next(iter(ways_on)) if len(ways_on) == 1 else None
    return way_on, taken, confirmations


def _answer_targets(state: State) -> list[str]:
    return [t for event in MENU_EVENTS if (t := state.next_on(event))]


def _confirms(state: State, gather: str) -> bool:
    """Whether a Gather right after `gather` asks the caller to confirm its answer."""
    prompt = state.properties.get("say")
    if reads_gather_result(state, gather):
        return True
    return isinstance(prompt, str) and bool(_CONFIRMS.search(prompt)) and bool(_YES_OR_NO.search(prompt))


def _skippable_path(
    flow: Flow, menu: Menu, intent: Intent, asked: dict[str, list[str]], findings: Findings
) -> SkippedPath | None:
    """The detail Gathers an intent's path starts with, when later widgets read what they asked."""
    gathers: list[str] = []
    skipped: list[str] = []
    says: list[str] = []
    resume: str | None = None
    name: str | None = intent.target
    while name in flow.states and name not in skipped and name not in says:
        state = flow.states[name]
        if state.type == SAY_PLAY:
            says.append(name)
            nexts = {t.next for t in state.transitions if t.next}
            name = nexts.pop() if len(nexts) == 1 else None
            continue
        if name not in asked:
            break
        way_on, taken, _ = _answer_path(flow, name)
        if way_on is None or way_on in skipped:
            findings.note(
                Finding.SKIP, name, f"asks for {', '.join(asked[name])}, but its answer leads on to more than one widget: left as it is"
            )
            break
        gathers.append(name)
        skipped += says + sorted(taken, key=flow.order.index)
        says, resume, name = [], way_on, way_on
    if not gathers or resume is None:
        return None
    blocked = set(skipped) | {menu.gather}
    readers = {g: [w for w in flow.order if w not in blocked and reads_gather_result(flow.states[w], g)] for g in gathers}
    if not any(readers.values()):
        for gather in gathers:
            findings.note(
                Finding.SKIP,
                gather,
                f"asks for {', '.join(asked[gather])}, which no later widget reads: left as it is (the AI's callers are asked again)",
            )
        return None
    copies = _copies(flow, resume, blocked, {w for names in readers.values() for w in names})
    if unsound := [name for name in copies if not _copyable(flow, flow.states[name])]:
        findings.note(
            Finding.SKIP,
            ", ".join(gathers),
            f"skipping them needs copies of {', '.join(unsound)}, which are not sound widgets (a Trigger, an unknown"
            " type, an event of another type or a link to no widget): left as they are",
        )
        return None
    fields = list(dict.fromkeys(f for g in gathers for f in asked[g]))
    return SkippedPath(
        intent.name, intent.target, gathers, skipped, resume, fields, {g: asked[g] for g in gathers}, readers, copies
    )


def _copyable(flow: Flow, state: State) -> bool:
    events = WIDGET_EVENTS.get(state.type)
    if state.type == TRIGGER or events is None:
        return False
    return all(t.event in events and (t.next is None or t.next in flow.states) for t in state.transitions)


def _copies(flow: Flow, resume: str, blocked: set[str], readers: set[str]) -> list[str]:
    """The widgets from `resume` on (not going back into `blocked`) that must be copied for a call that
    skipped the Gathers: those that read their answers, those that read what a copied widget did (it is
    the copy that ran), and every widget on the way to one of them. In file order."""
    inside = flow.reachable(resume, blocked=blocked)
    copied: set[str] = set()
    wanted = {w for w in inside if w in readers}
    while wanted - copied:
        copied |= wanted
        changed = True
        while changed:  # and what leads to them
            leading = {w for w in inside if w not in copied and any(t.next in copied for t in flow.states[w].transitions)}
            changed = bool(leading)
            copied |= leading
        wanted = {w for w in inside if any(reads_gather_result(flow.states[w], c) for c in copied)}
    return [w for w in flow.order if w in copied]
