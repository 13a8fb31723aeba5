"""What the machine needs to know about routing, as plain data.

The orchestrator builds these from the routing config; the machine never reads files.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

# The captured field that holds the caller's language (a BCP-47 code the orchestrator has normalised).
LANGUAGE_FIELD = "language"

# Route kinds that put the caller through to a person: where an urgent call may be sent when triage fails.
PERSON_ROUTE_KINDS = frozenset({"flex", "sip"})

# After the agent has asked for a field this many times, the caller is taken not to have it.
MAX_ASKS_PER_FIELD = 2

# Keys that end and clear a value typed on the keypad; more digits than this are not kept.
KEYPAD_DONE = "#"
KEYPAD_CLEAR = "*"
MAX_TYPED_DIGITS = 20


class RouteKind(StrEnum):
    """Where a route sends the call: the `kind` of a route in the routing config."""

    RESOLVE = "resolve"  # the AI answers the question itself, then hangs up
    STUDIO = "studio"
    FLEX = "flex"
    VOICEMAIL = "voicemail"
    SIP = "sip"


@dataclass(frozen=True, slots=True)
class RouteRule:
    """One route as the machine sees it: its name, the fields it needs, and its Studio node if any.

    `required_fields` are hard: the route cannot work without them (a Studio node reads them), so a call
    that lacks one goes to the human route instead. `wanted_fields` are soft: they are asked for, but a
    person on the route can ask too, so the call goes on without them, naming them as missing.
    """

    name: str
    kind: RouteKind
    required_fields: frozenset[str] = frozenset()
    # Identity of the Studio node this route enters ("FW…/node"), used by the re-entry guard.
    studio_node: str | None = None
    # The node it enters for callers of a language with its own target (e.g. a Spanish node).
    studio_node_by_language: Mapping[str, str] = field(default_factory=dict)
    wanted_fields: frozenset[str] = frozenset()

    def studio_node_for(self, language: str | None) -> str | None:
        return self.studio_node_by_language.get(language or "", self.studio_node)


@dataclass(frozen=True, slots=True)
class TriagePolicy:
    """Guards and caps of triage. `intents` maps an intent name to the name of its route."""

    intents: Mapping[str, str]
    routes: Mapping[str, RouteRule]
    fallback_route: str
    human_route: str
    min_confidence: float = 0.6
    # An urgent intent proposed with less than this (and at least min_confidence) is taken as urgent but not
    # yet as the need: a wrong urgent route costs a person's time, so the need is clarified once first, while
    # a clarification and the time for it are left. 0: no extra bar.
    urgent_min_confidence: float = 0.0
    max_clarifications: int = 2
    budget_s: float = 20.0
    # Time the budget is extended by, once, when a trusted intent's details are being asked: a caller
    # spelling out a name, a number and an address needs more than the seconds that find their need.
    details_budget_s: float = 0.0
    # A detail (or, while their need is being clarified, any words) given this recently when the budget
    # ends means the caller is still answering: the details extension applies once, urgent or not.
    answering_window_s: float = 10.0
    # Past the budget, a route that lacks only soft fields waits at most this long for an answer the caller
    # is giving (a person on the route can ask for the rest): it is heard out, and nothing more is asked.
    # A number said with a correction ("…0189, no, sorry, 0198") takes about 8 s, and hearing it a second.
    answer_grace_s: float = 12.0
    # A clarifying question asked with less of the budget left than this could not be answered in time:
    # the call is decided at once instead of being cut off mid-answer.
    clarify_needs_s: float = 8.0
    # The budget ends just as the agent has asked something: the caller is given this long after the agent's
    # last words to begin answering (a reaction, and the voice being detected), once, within the details time.
    answer_start_s: float = 3.0
    # How long the handoff line may take to play before teardown goes ahead without its mark.
    handoff_line_timeout_s: float = 8.0
    # Languages the front desk serves; a caller in another one goes to the human route. Empty: no check.
    supported_languages: frozenset[str] = frozenset()
    # Intents whose calls never end in voicemail or a hang-up (see CallMachine.urgent_proposal).
    urgent_intents: frozenset[str] = frozenset()
    # Keypad key ("0"-"9", "*", "#") -> the intent it chooses, as on the old menu.
    keys: Mapping[str, str] = field(default_factory=dict)
    # The phone field pre-filled, unconfirmed, from the caller's own number (CallerNumberKnown).
    caller_id_field: str | None = None
    # Fields the caller may type on the keypad (phone and date fields): while the agent asks for one,
    # keys fill it instead of choosing a menu intent.
    keyable_fields: frozenset[str] = frozenset()
    # A typed value ends at "#", or after this long without a key.
    keypad_timeout_s: float = 5.0
    # Fields whose spoken value the agent reads back: unconfirmed until the caller says yes.
    read_back_fields: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name in (self.fallback_route, self.human_route, *self.intents.values()):
            if name not in self.routes:
                raise ValueError(f"route {name!r} is referenced but not defined")
        if self.routes[self.human_route].studio_node is not None:
            raise ValueError("the human route must not be a Studio node (the re-entry guard relies on it)")
        for intent in (*self.urgent_intents, *self.keys.values()):
            if intent not in self.intents:
                raise ValueError(f"intent {intent!r} is referenced but not defined")
        if self.urgent_intents and self.routes[self.human_route].kind not in PERSON_ROUTE_KINDS:
            raise ValueError("with urgent intents, the human route must reach a person (flex or sip)")

    def route_of(self, intent: str) -> RouteRule:
        return self.routes[self.intents[intent]]


@dataclass(frozen=True, slots=True)
class CallHistory:
    """Where this call has already been: the node that handed it to us and the nodes it entered."""

    entry_node: str | None = None
    visited_nodes: frozenset[str] = field(default_factory=frozenset)

    def forbids(self, studio_node: str | None) -> bool:
        return studio_node is not None and (
            studio_node == self.entry_node or studio_node in self.visited_nodes
        )
