"""The import: a Studio flow becomes a routing config, a patched flow, diagrams and a report.

`import_flow` reads the flow (flow.py), finds its first caller-facing menu (menu.py), pairs its branches
into needs (pairing.py) that become intents (intents.py), maps their widgets to routes (routes.py), finds
where the flow keeps the caller's language (language.py) and the details the old IVR asked for after the
menu (details.py), patches the flow for resume mode (patch.py, DESIGN.md section 5), and writes the config
text (routing_toml.py), the diagrams (mermaid.py) and the report (report.py, review.py). All of it is computation on the JSON text, except that the
generated config is checked with `load_routing_config` through a temporary file; `write_import` writes
the output. Bad input of any kind ends in `StudioImportError` with a one-line reason, never another exception.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from orchestrator.studio.details import CaptureField, find_details
from orchestrator.studio.flow import FLOW_SID, StudioImportError, parse_flow
from orchestrator.studio.flow_text import one_line, short
from orchestrator.studio.intents import Intent, map_intents
from orchestrator.studio.language import caller_language
from orchestrator.studio.menu import find_menu
from orchestrator.studio.mermaid import flow_mermaid
from orchestrator.studio.patch import DEFAULT_PUBLIC_URL, patch_flow
from orchestrator.studio.report import Findings, ImportReport
from orchestrator.studio.review import review_flow, review_patch
from orchestrator.studio.routes import RouteMapper
from orchestrator.studio.routing_toml import routing_toml

PLACEHOLDER_FLOW_SID = "FW" + "0" * 32


@dataclass(frozen=True)
class ImportResult:
    routing_toml: str
    patched_flow: dict[str, Any]
    before_mermaid: str
    after_mermaid: str
    report: ImportReport
    intents: tuple[Intent, ...]
    fields: tuple[CaptureField, ...]
    added_widgets: tuple[str, ...]  # the redirect, the arm and intent splits, the field splits, the reading copies
    # Widgets whose transitions to the Gather now lead to the redirect; every other widget is as it was.
    changed_widgets: tuple[str, ...]


def import_flow(
    definition_text: str, *, source: str, public_url: str = DEFAULT_PUBLIC_URL, flow_sid: str | None = None
) -> ImportResult:
    """Import a Studio flow definition (JSON text). Raises `StudioImportError` for any flow it cannot use.

    `source` names the flow in the report and the config's comments; `public_url` is our server's base
    URL (the redirect widget calls `{public_url}/voice/incoming`); `flow_sid` is the flow's FW… SID,
    which the JSON export does not contain (a placeholder in the right shape otherwise).
    """
    base_url = _public_base(public_url)
    if flow_sid is not None and not FLOW_SID.fullmatch(flow_sid):
        raise StudioImportError(f"the flow SID must be 'FW' followed by 32 hex characters (got {short(flow_sid)})")
    flow = parse_flow(definition_text)
    menu = find_menu(flow)

    known_sid = flow_sid or flow.flow_sid
    findings = Findings()
    routes = RouteMapper(
        flow=flow,
        menu=menu,
        flow_sid=known_sid or PLACEHOLDER_FLOW_SID,
        flow_sid_is_placeholder=known_sid is None,
        findings=findings,
    )
    intents = map_intents(flow, menu, routes, findings)
    if not intents:
        raise StudioImportError(
            f"no branch of the menu after {menu.gather} leads to a widget a call can go to: no intents"
        )
    triage = routes.triage_routes()
    language = caller_language(flow, menu, findings)
    details = find_details(flow, menu, intents, routes.resumed_routes(), findings)

    review_flow(flow, menu, findings, details.fields)
    patched = patch_flow(
        flow,
        menu.gather,
        intents,
        triage.fallback_widget,
        routes.flow_sid,
        base_url,
        skipped_paths=details.skipped_paths,
        language=language.expression if language else None,
    )
    review_patch(
        flow,
        patched,
        findings,
        skipped_paths=details.skipped_paths,
        gather=menu.gather,
        no_match=triage.fallback_widget,
        flex_widgets=routes.flex_widgets(),
        flow_sid=routes.flow_sid,
        flow_sid_is_placeholder=routes.flow_sid_is_placeholder,
        base_url=base_url,
    )

    text = routing_toml(
        source=source,
        description=one_line(str(flow.raw.get("description") or "")),
        intents=intents,
        fields=details.fields,
        routes=routes.routes,
        triage_routes=triage,
        placeholders=routes.workflow_placeholders > 0 or routes.flow_sid_is_placeholder,
    )
    untouched_legacy = [menu.gather, *menu.splits]
    return ImportResult(
        routing_toml=text,
        patched_flow=patched.definition,
        before_mermaid=flow_mermaid(flow.raw, legacy=untouched_legacy),
        after_mermaid=flow_mermaid(
            patched.definition, added=patched.added, changed=patched.repointed, legacy=untouched_legacy
        ),
        report=findings.report(source=source, gather=menu.gather, redirect=patched.added.redirect),
        intents=tuple(intents),
        fields=tuple(details.fields),
        added_widgets=tuple(patched.added),
        changed_widgets=tuple(patched.repointed),
    )


def write_import(result: ImportResult, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write routing.toml, flow.patched.json, flow.before.mmd, flow.after.mmd and IMPORT_REPORT.md."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "routing.toml": result.routing_toml,
        "flow.patched.json": json.dumps(result.patched_flow, indent=2, ensure_ascii=False) + "\n",
        "flow.before.mmd": result.before_mermaid,
        "flow.after.mmd": result.after_mermaid,
        "IMPORT_REPORT.md": result.report.render(),
    }
    written = []
    for name, text in files.items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _public_base(url: str) -> str:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise StudioImportError(
            f"the public URL must be an http:// or https:// base URL without a query (got {short(url)})"
        )
    return url.rstrip("/")
