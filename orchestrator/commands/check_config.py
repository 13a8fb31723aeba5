"""`orchestrator check-config FILE`: validate a routing config (TOML plus `ORCHESTRATOR_…` overrides) and
print its summary; a broken one is one line naming the file, the key and the problem (exit status 2). It also
warns when a configured OpenAI model (from the environment) has an announced shutdown date."""
from __future__ import annotations

import argparse

from orchestrator.config import describe_config, load_routing_config, load_server_settings, model_shutdown_warnings


def add_check_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config_file")


def run_check_config(args: argparse.Namespace) -> int:
    config = load_routing_config(args.config_file)
    print(describe_config(config))
    for warning in model_shutdown_warnings(load_server_settings()):
        print(warning)
    print(f"{args.config_file}: OK")
    return 0
