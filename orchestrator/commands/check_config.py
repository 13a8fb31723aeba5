"""`orchestrator check-config FILE`: validate a routing config (TOML plus `ORCHESTRATOR_…` overrides) and
print its summary; a broken one is one line naming the file, the key and the problem (exit status 2)."""
from __future__ import annotations

import argparse

from orchestrator.config import describe_config, load_routing_config


def add_check_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config_file")


def run_check_config(args: argparse.Namespace) -> int:
    config = load_routing_config(args.config_file)
    print(describe_config(config))
    print(f"{args.config_file}: OK")
    return 0
