"""`orchestrator serve`: the server, in this process or as `--workers N` processes sharing the port.

It announces what runs, then serves until SIGINT or SIGTERM: the calls in progress take the fallback
route and close in order, then it stops.
"""
from __future__ import annotations

import argparse
import functools
import os
import signal
import socket
from pathlib import Path

import structlog
import trio

from orchestrator.config import (
    ServerSettings,
    development_auth_token,
    load_routing_config,
    load_server_settings,
)
from orchestrator.telemetry import configure_logging


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default: %(default)s)")
    parser.add_argument("--config", type=Path, help="routing config (default: $ORCHESTRATOR_CONFIG, else the example)")
    parser.add_argument("--engine", choices=["auto", "realtime", "offline", "fake"],
                        help="who listens to the caller (default auto: realtime with OPENAI_API_KEY, else offline)")
    parser.add_argument("--public-url", help="the URL Twilio reaches this server at (default: the listen address)")
    parser.add_argument("--data-dir", type=Path, help="where the call store lives (default: var)")
    parser.add_argument("--insecure-skip-signature-check", action="store_true",
                        help="development only: accept requests without a valid X-Twilio-Signature")
    parser.add_argument("--access-log", action="store_true", help="log every HTTP request")
    parser.add_argument("--workers", type=int,
                        help="server processes sharing the port, e.g. one per core (default: $ORCHESTRATOR_WORKERS, else 1)")


def run_serve(args: argparse.Namespace) -> int:
    # The server's parts load here, not when the command line is parsed.
    from orchestrator.server import listening_socket, this_worker

    settings = load_server_settings(
        config=args.config,
        engine=args.engine,
        public_url=args.public_url,
        data_dir=args.data_dir,
        insecure_skip_signature_check=True if args.insecure_skip_signature_check else None,
        workers=args.workers,
    )
    configure_logging()
    worker = this_worker()
    if worker is not None:
        structlog.contextvars.bind_contextvars(worker=worker)  # every log line says which worker
        listening = listening_socket(args.host, args.port, shared_port=True)
        trio.run(functools.partial(
            serve_until_signalled, settings, args.host, args.port, args.access_log,
            listening=listening, worker=worker, announce=worker.startswith("1/"),
        ))
        return 0
    if settings.workers == 1:
        trio.run(serve_until_signalled, settings, args.host, args.port, args.access_log)
        return 0
    return _serve_with_workers(args, settings)


async def _check_store(settings: ServerSettings) -> None:
    from orchestrator.composition import open_store

    store = await open_store(settings)
    await store.aclose()


def _serve_with_workers(args: argparse.Namespace, settings: ServerSettings) -> int:
    from orchestrator.server import listening_socket, run_workers

    load_routing_config(settings.config)  # a broken config or store fails once, here, not in every worker
    trio.run(_check_store, settings)
    if settings.twilio_auth_token is None:
        development_auth_token(settings.data_dir)  # made once, before the workers could race to make it
    # Held (bound, not listening) so the port stays ours while workers start and restart.
    holding = listening_socket(args.host, args.port, shared_port=True, listen=False)
    host, port = holding.getsockname()[:2]
    print(f"{settings.workers} workers sharing {host}:{port}; the call store is where they meet", flush=True)
    serve_args = ["--host", args.host, "--port", str(port)]
    for flag, value in (("--config", args.config), ("--engine", args.engine),
                        ("--public-url", args.public_url), ("--data-dir", args.data_dir)):
        if value is not None:
            serve_args += [flag, str(value)]
    for flag, on in (("--insecure-skip-signature-check", args.insecure_skip_signature_check),
                     ("--access-log", args.access_log)):
        if on:
            serve_args.append(flag)
    try:
        return run_workers(serve_args, settings.workers, grace_s=settings.graceful_shutdown_seconds)
    finally:
        holding.close()


async def serve_until_signalled(
    settings: ServerSettings,
    host: str,
    port: int,
    access_log: bool = False,
    *,
    listening: socket.socket | None = None,
    worker: str | None = None,
    announce: bool = True,
) -> None:
    """`orchestrator serve`: announce what runs, then serve until SIGINT or SIGTERM. A worker of
    `serve --workers N` (`worker` names it) serves on the socket it inherited; one of them announces."""
    from orchestrator.composition import run_server
    from orchestrator.server import use_batch_scheduling

    # Before any thread starts: threads inherit the policy of the one that starts them.
    scheduling = [use_batch_scheduling()] if settings.batch_scheduling else []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with run_server(
            settings, host=host, port=port, access_log=access_log, listening=listening
        ) as running:
            state = running.state
            if worker is not None:
                print(f"worker {worker} (pid {os.getpid()}) serving {running.base_url}", flush=True)
            if not announce:
                async for _ in signals:
                    break
                return
            for line in [*running.announcements, *scheduling]:
                print(line, flush=True)
            print(
                f"front desk for {state.config.company.name or 'the configured company'} listening on "
                f"{running.base_url}\n  voice webhook: {running.public_url}/voice/incoming"
                f"\n  media stream:  {state.media_stream_url}\n  health:        {running.base_url}/healthz"
                "\nCtrl+C to stop.",
                flush=True,
            )
            async for received in signals:
                print(f"{signal.Signals(received).name}: finishing the calls in progress, then stopping", flush=True)
                break
