"""`orchestrator rollout`: read and change the live rollout on the store the servers use.

    orchestrator rollout show              the setting, where it comes from, the brake, arms of the last 7 days
    orchestrator rollout set 25            25 % of callers to the AI (also clears a tripped brake)
    orchestrator rollout allow +1415…      a tester's number: always the AI
    orchestrator rollout deny +1415…       always the legacy path
    orchestrator rollout unlist +1415…     back to the percentage
    orchestrator rollout release           release a tripped brake: back to the percentage before it

The store is the one `serve` uses: `$ORCHESTRATOR_STORE` (a redis:// URL or a SQLite path), else
`calls.sqlite3` in `--data-dir` (default var). Every server reads the setting on each call, so a
change applies to the next call everywhere, without a restart. Bad input is one line on stderr and
exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from collections import Counter
from pathlib import Path

import trio

from orchestrator.config import ConfigError, RoutingConfig, load_routing_config
from orchestrator.rollout import (
    RolloutControl,
    RolloutError,
    RolloutSetting,
    check_percent,
)
from orchestrator.store import CallStore, CallStoreError

SHOW_DAYS = 7


def add_rollout_arguments(subparsers: argparse._SubParsersAction) -> None:
    rollout = subparsers.add_parser("rollout", help="show or change the live rollout (percentage, testers, brake)")
    rollout.add_argument("--config", type=Path, help="routing config (default: $ORCHESTRATOR_CONFIG, else the example)")
    rollout.add_argument("--data-dir", type=Path, help="where the call store lives (default: var)")
    actions = rollout.add_subparsers(dest="rollout_action", required=True)
    actions.add_parser("show", help="the live setting, the brake and the arms of the last 7 days")
    percent = actions.add_parser("set", help="the share of callers the AI answers, 0 to 100")
    percent.add_argument("percent", help="e.g. 5, 25, 60, 100")
    for name, what in (
        ("allow", "always the AI for this number (a tester)"),
        ("deny", "always the legacy path for this number"),
        ("unlist", "back to the percentage for this number"),
    ):
        listed = actions.add_parser(name, help=what)
        listed.add_argument("number", help="a phone number, e.g. +14155552671")
    actions.add_parser("release", help="release a tripped brake: the percentage before it comes back")
    rollout.set_defaults(run=run_rollout)


def run_rollout(args: argparse.Namespace) -> int:
    try:
        if args.rollout_action == "set":
            check_percent(args.percent)  # before opening anything
        return trio.run(_run, args)
    except (RolloutError, ConfigError, CallStoreError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


async def _run(args: argparse.Namespace) -> int:
    from orchestrator.composition import open_store, rollout_control
    from orchestrator.config import load_server_settings

    settings = load_server_settings(config=args.config, data_dir=args.data_dir)
    config = load_routing_config(settings.config)
    store = await open_store(settings)
    async with store:
        control = rollout_control(store, config)
        action, by = args.rollout_action, _who()
        if action == "show":
            print(await describe_rollout(control, store, config))
            return 0
        if action == "set":
            changed = await control.set_percent(check_percent(args.percent), by)
        elif action == "allow":
            changed = await control.allow(args.number, by)
        elif action == "deny":
            changed = await control.deny(args.number, by)
        elif action == "unlist":
            changed = await control.unlist(args.number, by)
        elif (await control.current()).brake is None:
            print("the brake is not tripped: nothing to release")
            return 0
        else:
            changed = await control.release_brake(by)
        print(f"rollout: {_arm_share(changed)}")
        print(f"  always AI: {_numbers(changed.allow)}; always legacy: {_numbers(changed.deny)}")
        print("every server applies it from its next call")
        return 0


async def describe_rollout(control: RolloutControl, store: CallStore, config: RoutingConfig) -> str:
    setting = await control.current()
    now = time.time()
    if setting.source == "store":
        source = f"the live setting in the call store, set {_when(setting.updated_at)} by {setting.updated_by or '?'}"
    else:
        where = config.config_source_path or "the routing config"
        source = f"the routing config {where} (never changed with `orchestrator rollout`)"
    brake = control.brake_rule
    rule = (
        f"trips above {brake.max_failure_rate:.0%} failures of the AI arm's last {brake.window_calls} calls"
        f", once there are {brake.min_calls}" if brake.enabled else "off in the config"
    )
    lines = [
        f"rollout: {_arm_share(setting)}",
        f"  from {source}",
        f"  salt {setting.salt!r}; legacy calls to our own number go to the route {config.legacy_route!r}",
        f"  always AI: {_numbers(setting.allow)}",
        f"  always legacy: {_numbers(setting.deny)}",
    ]
    if setting.brake is None:
        lines.append(f"brake: not tripped ({rule})")
    else:
        trip = setting.brake
        lines += [
            f"brake: TRIPPED {_when(trip.tripped_at)}: {trip.reason}",
            f"  failure rate {trip.failure_rate:.0%} over {trip.window_calls} AI calls; the AI had"
            f" {trip.previous_percent:g} %. `orchestrator rollout release` gives it back",
        ]
    records = await store.calls_since(now - SHOW_DAYS * 86400)
    arms = Counter(record.passes[0].triage_pass.arm for record in records if record.passes)
    counts = ", ".join(f"{arm} {count}" for arm, count in sorted(arms.items())) or "none"
    lines.append(f"calls in the last {SHOW_DAYS} days by arm: {counts}")
    return "\n".join(lines)


def _arm_share(setting: RolloutSetting) -> str:
    return f"{setting.percent:g} % of callers to the AI, the rest to the legacy path"


def _numbers(numbers: tuple[str, ...]) -> str:
    return ", ".join(numbers) if numbers else "-"


def _when(unix_s: float | None) -> str:
    if unix_s is None:
        return "never"
    return dt.datetime.fromtimestamp(unix_s, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _who() -> str:
    user = os.environ.get("USER") or os.environ.get("USERNAME")
    return f"cli:{user}" if user else "cli"
