"""A grep of every log the test suite writes, at its end, for the secrets it configured: a pytest plugin
(`tests/conftest.py` loads it).

The suite gives its servers known secrets (`tests/suite_secrets.py`: the Twilio auth token, the OpenAI key,
the ops and handoff tokens, the caller number its simulated callers dial from). Collected while it runs:
- every test's captured output and log records (stdout and stderr at the descriptor level, so also what the
  subprocesses a test starts print there, and the logging records pytest captured);
- every record the `logging` module sees at INFO and up, structlog's included (servers route structlog
  through it): a session handler writes them to a file;
- every `*.log` file under pytest's temporary directory (servers that tests start as processes write there).
At the end, those are searched for each secret (as is, and URL-encoded) and for every pass token any store
under the temporary directory issued. Masked forms (`[redacted]`, `+1501***2661`) do not contain the value.
A find fails the run: it is reported as an error of the session, with where it was found. Under `pytest -n`
each worker writes its records into the controlling process's directory, and that process searches them all.
"""
from __future__ import annotations

import logging
import re
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests import suite_secrets

# A pass token: `secrets.token_urlsafe(18)` (orchestrator/store), standing alone.
LOG_DIRECTORY_KEY = "suite_log_directory"  # what a `pytest -n` worker is told: where its records go
_PASS_TOKEN = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{24}(?![A-Za-z0-9_-])")


@dataclass(frozen=True)
class Leak:
    where: str
    secret: str  # its name, never its value
    line: int


class SecretSearch:
    """Finds named secret values (and their URL-encoded forms) and pass tokens in text."""

    def __init__(self, secrets: Mapping[str, str], pass_tokens: Iterable[str] = ()) -> None:
        encoded = {quote(value, safe=""): f"{name} (URL-encoded)" for name, value in secrets.items()}
        self._forms = {value: name for value, name in {**encoded, **{v: k for k, v in secrets.items()}}.items() if value}
        self._pass_tokens = frozenset(pass_tokens)

    def in_lines(self, where: str, lines: Iterable[str]) -> Iterator[Leak]:
        for number, line in enumerate(lines, 1):
            for value, name in self._forms.items():
                if value in line:
                    yield Leak(where, name, number)
            if self._pass_tokens and any(token in self._pass_tokens for token in _PASS_TOKEN.findall(line)):
                yield Leak(where, "a pass token", number)

    def in_file(self, path: Path) -> Iterator[Leak]:
        with path.open(encoding="utf-8", errors="replace") as lines:
            yield from self.in_lines(str(path), lines)


def pass_tokens_under(directory: Path) -> set[str]:
    """The pass tokens every SQLite call store under `directory` issued."""
    tokens: set[str] = set()
    for store in directory.rglob("*.sqlite3"):
        try:
            with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
                tokens.update(token for (token,) in db.execute("SELECT token FROM passes"))
        except sqlite3.Error:  # not a call store, or one that was never opened
            continue
    return tokens


class LogSecretCheck:
    """The plugin for one session (registered by `pytest_configure`): where the logs go, and the search at
    the end."""

    def __init__(self, temporary: Path | None, *, worker: str | None = None, directory: Path | None = None) -> None:
        self.temporary = temporary  # pytest's base temporary directory (None: not known)
        # A worker of `pytest -n` (xdist) searches nothing: its records go to the controlling process's
        # directory (`directory`), which that process searches at its end with every test's captured output.
        self.worker = worker
        self.directory = directory or Path(tempfile.mkdtemp(prefix="suite-logs-"))
        # Each test's captured output reaches the controlling process in its report: only that process writes it.
        self.captured = None if worker else (self.directory / "captured.txt").open("w", encoding="utf-8")
        records = f"records-{worker}.txt" if worker else "records.txt"
        self.records = logging.FileHandler(self.directory / records, encoding="utf-8")
        self.records.setLevel(logging.INFO)
        self.records.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        root = logging.getLogger()
        self.root_level = root.level
        root.addHandler(self.records)
        if root.level > logging.INFO:
            root.setLevel(logging.INFO)
        # The state machine library's trace of every callback (state names only) at INFO, as servers run it
        # (`quiet_state_machine_library`): formatting it for every event of every test is most of the cost.
        logging.getLogger("transitions").setLevel(logging.ERROR)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist starts a worker: it records where this process searches."""
        node.workerinput[LOG_DIRECTORY_KEY] = str(self.directory)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.captured is None:
            return
        for title, content in report.sections:
            if title.startswith("Captured"):
                self.captured.write(f"===== {report.nodeid} {title}\n{content}\n")

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.worker:
            self._stop_recording()
            return
        leaks = self.search()
        if not leaks:
            return
        shown = "\n".join(f"  {leak.secret} in {leak.where}, line {leak.line}" for leak in leaks[:50])
        message = f"{len(leaks)} secret(s) configured for the suite found in its logs:\n{shown}"
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:  # shown with the errors, and counted in the closing line
            reporter.stats.setdefault("error", []).append(pytest.TestReport(
                nodeid="log secret check", location=("tests/log_secret_check.py", 0, "log secret check"),
                keywords={}, outcome="failed", longrepr=message, when="teardown",
            ))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _stop_recording(self) -> None:
        root = logging.getLogger()
        root.removeHandler(self.records)
        root.setLevel(self.root_level)
        self.records.close()
        if self.captured is not None:
            self.captured.close()

    def search(self) -> list[Leak]:
        self._stop_recording()
        files = sorted(self.directory.glob("*.txt"))  # captured output, and this process's and its workers' records
        pass_tokens: set[str] = set()
        if self.temporary is not None and self.temporary.is_dir():
            files += sorted(self.temporary.rglob("*.log"))
            pass_tokens = pass_tokens_under(self.temporary)
        search = SecretSearch(suite_secrets.NEVER_LOGGED, pass_tokens)
        return [leak for path in files if path.is_file() for leak in search.in_file(path)]


@pytest.hookimpl(trylast=True)  # after pytest's tmp_path plugin has set up its factory
def pytest_configure(config: pytest.Config) -> None:
    factory = getattr(config, "_tmp_path_factory", None)  # pytest's own; set before this hook runs
    workerinput = getattr(config, "workerinput", None)  # a process of `pytest -n`
    if workerinput is not None and LOG_DIRECTORY_KEY in workerinput:
        check = LogSecretCheck(None, worker=workerinput["workerid"], directory=Path(workerinput[LOG_DIRECTORY_KEY]))
    else:
        check = LogSecretCheck(factory.getbasetemp() if factory else None)
    config.pluginmanager.register(check, "log-secret-check")
