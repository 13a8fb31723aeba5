"""Where each persona's need lands, in text, in seconds: the offline dialogue and the real call machine,
no audio, no server. A fast check of the offline classifier and the need policy between whole-call runs
(run.sh takes minutes; this, about ten seconds for a hundred personas).

    .venv/bin/python benchmarks/outcomes/needs_in_text.py                       # the 48 personas here
    .venv/bin/python benchmarks/outcomes/needs_in_text.py benchmarks/outcomes/holdout benchmarks/outcomes

Per persona: the opening line is said; if the machine asks to clarify the need, the persona's next line
(its rephrasing) is said. The route is where the machine sends the call on that need: the decision if it
made one, else the proposed intent's route when the machine trusts it, else the fallback route (a need
still unclear goes there once the clarification is spent). Details are not played: that is the whole-call
benchmark's work.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout: the package as it is here

from machines import events as ev  # noqa: E402
from machines.call_machine import CallFlow  # noqa: E402
from machines.effects import AnswerTool, Line, Speak  # noqa: E402
from orchestrator.config.routing import RoutingConfig, load_routing_config  # noqa: E402
from orchestrator.engines.offline.dialogue import OfflineDialogue  # noqa: E402
from orchestrator.engines.offline.engine import load_intent_model  # noqa: E402
from orchestrator.engines.offline.intent_model import IntentModel  # noqa: E402
from orchestrator.engines.tools import interpret_tool_call, tool_output  # noqa: E402
from orchestrator.testing.personas import Persona, load_personas  # noqa: E402

EXAMPLES = REPO / "examples"


def route_of_need(persona: Persona, config: RoutingConfig, model: IntentModel) -> tuple[str, str]:
    """The route the call takes on the persona's need, and why (the decision's reason, or what stands)."""
    policy = config.triage_policy()
    machine = CallFlow(policy, lambda: 0.0).start_call("CA" + "0" * 32)
    dialogue = OfflineDialogue(config, model, datetime.date.today, dict(machine.captured))
    lines: list[Speak] = []
    for effect in (*machine.handle(ev.RealtimeOpened()), *machine.handle(ev.GreetingPlayed())):
        if isinstance(effect, Speak):
            lines.append(effect)
    for said in persona.need.lines[:2]:
        asked = len(lines)
        for call in dialogue.on_caller_turn(said).tool_calls:
            interpreted = interpret_tool_call(config, call.name, call.arguments_json, call.call_id)
            for effect in machine.handle(interpreted):
                if isinstance(effect, AnswerTool):
                    dialogue.on_tool_output(effect.tool_call_id, tool_output(effect))
                elif isinstance(effect, Speak):
                    lines.append(effect)
        clarified = any(line.line is Line.CLARIFY for line in lines[asked:])
        if machine.decision is not None or not clarified:
            break
    if machine.decision is not None:
        return machine.decision.route, machine.decision.reason.value
    proposal = machine.proposal
    if proposal is not None and proposal.intent in policy.intents and proposal.confidence >= policy.min_confidence:
        return policy.route_of(proposal.intent).name, f"{proposal.intent} {proposal.confidence:.2f}"
    guess = f"{proposal.intent} {proposal.confidence:.2f}" if proposal is not None else "no need heard"
    return policy.fallback_route, f"unclear ({guess})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, default=[HERE], help="folders of persona files")
    args = parser.parse_args(argv)
    personas = [persona for folder in args.folders for persona in load_personas(folder)]
    configs: dict[str, tuple[RoutingConfig, IntentModel]] = {}
    right = 0
    for persona in personas:
        if persona.config not in configs:
            config = load_routing_config(EXAMPLES / f"{persona.config}.toml")
            configs[persona.config] = (config, load_intent_model(config))
        route, why = route_of_need(persona, *configs[persona.config])
        right += route == persona.expect.route
        verdict = "ok  " if route == persona.expect.route else "MISS"
        print(f"{verdict} {persona.name:<44} {persona.expect.route:>22} → {route:<22} {why}")
    print(f"right route on the need: {right}/{len(personas)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
