"""Needs: the menu's branches paired by what the caller wants, one need per intent.

Branches that lead to the same widget are one need. A keypress branch joins the speech branch of the
same need when, in this order: both lead to the same widget past Say/Play widgets; the prompt offers
them together ("Press 1 or say taxi"); or their names and words share a word no other speech branch has
("pressed_taxi", "said_taxi"). The need goes where its speech branch led, so the AI's caller hears what a
caller who said it heard. A keypress branch that matches no speech branch, or more than one, stays a need
of its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.studio.flow import Flow
from orchestrator.studio.flow_text import name_words
from orchestrator.studio.menu import Branch, Menu
from orchestrator.studio.report import Finding, Findings

# Studio names a condition "If value equal_to 1" unless the author renames it: no meaning in that.
GENERATED_CONDITION_NAME = re.compile(r"(?i)^\s*if value\b")
SAY_WORD = re.compile(r"(?i)\bsay\s+[\"'“]?([a-z][\w'’-]*(?:\s+[a-z][\w'’-]*){0,2}?)[\"'”]?(?=\s+(?:or|and|to|for|if)\b|\s*[,.;!?]|\s*$)")


@dataclass
class Need:
    branches: list[Branch]  # speech branches first, then keypress ones, each in menu order
    target: str  # where the intent routes: the widget its speech branch led to
    paired: list[str] = field(default_factory=list)  # how keypress branches joined it, for the report

    @property
    def targets(self) -> list[str]:
        """Every widget its branches led to, the one it routes to first."""
        return list(dict.fromkeys([self.target, *(b.target for b in self.branches if b.target)]))

    @property
    def speech(self) -> bool:
        return any(b.kind == "speech" for b in self.branches)

    def keys(self) -> list[str]:
        return list(dict.fromkeys(v for b in self.branches if b.kind == "digits" for v in b.values()))

    def words(self) -> list[str]:
        return list(dict.fromkeys(v for b in self.branches if b.kind == "speech" for v in b.values()))

    def friendly_names(self) -> list[str]:
        names = (c.friendly_name.strip() for b in self.branches for c in b.conditions)
        return list(dict.fromkeys(n for n in names if n and not GENERATED_CONDITION_NAME.match(n)))


def pair_branches(flow: Flow, menu: Menu, findings: Findings) -> list[Need]:
    """The menu's needs in branch order; branches that lead nowhere usable are noted and left out."""
    by_target: dict[str, list[Branch]] = {}
    for branch in menu.branches:
        if _usable(flow, menu, branch, findings):
            by_target.setdefault(branch.target, []).append(branch)  # type: ignore[arg-type]
    needs = [Need(sorted(branches, key=lambda b: b.kind != "speech"), target) for target, branches in by_target.items()]
    spoken = [need for need in needs if need.speech]
    prompt = flow.states[menu.gather].properties.get("say")
    rules: list[Callable[[Need, Need], str | None]] = [
        lambda keyed, words: _same_action(flow, keyed, words),
        lambda keyed, words: _offered_together(prompt, keyed, words),
        lambda keyed, words: _shared_word(keyed, words, spoken),
    ]
    for keyed in [need for need in needs if not need.speech]:
        for rule in rules:
            matches = [(words, why) for words in spoken if (why := rule(keyed, words)) is not None]
            if len(matches) == 1:
                (words, why), = matches
                words.branches += keyed.branches
                keys = ", ".join(keyed.keys()) or "(no key)"
                words.paired.append(f"keys {keys} ({keyed.target}) with the words of {words.target}: {why}")
                needs.remove(keyed)
                break
    return needs


def _usable(flow: Flow, menu: Menu, branch: Branch, findings: Findings) -> bool:
    label = branch.label()
    if branch.target is None:
        findings.note(Finding.DEAD_END, branch.split, f"branch {label} has no next widget (the call ends there): not an intent")
    elif branch.target == menu.gather or flow.first_action(branch.target) == menu.gather:
        findings.note(
            Finding.LOOP, branch.split, f"branch {label} leads back to {menu.gather} (the menu again): not an intent"
        )
    elif branch.target not in flow.states:
        findings.note(
            Finding.BROKEN_LINK,
            branch.split,
            f"branch {label} leads to {branch.target!r}, which is not a widget: not an intent",
        )
    else:
        return True
    return False


def _same_action(flow: Flow, keyed: Need, spoken: Need) -> str | None:
    action = flow.first_action(keyed.target)
    if action is not None and action == flow.first_action(spoken.target):
        return f"both lead to {action}"
    return None


def _offered_together(prompt: object, keyed: Need, spoken: Need) -> str | None:
    """The prompt's clause with "press <key>" says one of the speech branch's words ("Press 1 or say taxi")."""
    if not isinstance(prompt, str):
        return None
    said = {w.casefold() for w in spoken.words()} | {w for n in spoken.friendly_names() for w in name_words(n)}
    for key in keyed.keys():
        for clause in re.split(r"[,;.!?\n]+", prompt):
            if not re.search(rf"(?i)\bpress\s+{re.escape(key)}\b", clause):
                continue
            for word in SAY_WORD.findall(clause):
                if word.casefold() in said:
                    return f'the prompt says "{" ".join(clause.split())}"'
    return None


def _shared_word(keyed: Need, spoken: Need, every_spoken: list[Need]) -> str | None:
    """A word in both branches' names (or the speech branch's words) that no other speech branch has."""
    def words_of(need: Need) -> set[str]:
        names = [*need.friendly_names(), need.target, *need.words()]
        return {word for name in names for word in name_words(name)}

    others = set().union(*(words_of(n) for n in every_spoken if n is not spoken))
    shared = sorted((words_of(keyed) & words_of(spoken)) - others)
    return f"both are named for {', '.join(shared)}" if shared else None
