"""The compatibility matrix: the core integration tests against every tested Kafka release, one fresh broker each.

``make test-matrix`` (or ``python -m pyrallel_tools.compat_matrix [--versions ...] [--doc PATH] [-- pytest args]``,
from the repository's root) runs, for each version of ``COMPATIBILITY_VERSIONS``: resolve its jars (so a fresh
machine works), start a one-broker local Kafka of that version on a free port in a temporary run directory, run
pytest on ``CORE_TEST_FILES`` as a subprocess with ``PYRALLEL_BOOTSTRAP_SERVERS`` pointing at it and
``PYRALLEL_KAFKA_VERSION`` naming it (tests that start their own broker take that version), read pytest's JUnit
XML, and stop the broker whatever happened. Tests that fail are run once more on a fresh broker of the same version,
to tell a flake of a loaded machine from an incompatibility; both outcomes go into the document.

The result table is written to ``docs/compatibility.md`` with the date, the machine, the client library and the
way to re-run it. The exit status is 1 when a failure came back on its re-run (or a version could not run at all),
0 otherwise: a flake is reported in the document, not hidden, but does not fail the target.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pyrallel_tools.localkafka.cluster import LocalKafka
from pyrallel_tools.localkafka.errors import LocalKafkaError
from pyrallel_tools.localkafka.jars import (
    COMPATIBILITY_VERSIONS,
    KAFKA_VERSION_ENV,
    check_version,
    connect_version,
    java_executable,
)
from pyrallel_tools.localkafka.ports import free_port

log = logging.getLogger(__name__)

CORE_TEST_FILES: tuple[tuple[str, str], ...] = (
    ("tests/integration/test_consumer_core.py",
     "delivery (every record once), per-key order, commits, SIGKILL restart, retries, backpressure, observer"),
    ("tests/integration/test_rebalance.py", "rebalance hand-over (classic and consumer protocol)"),
    ("tests/integration/test_offset_map_trust.py", "committed offset map: trusted or ignored"),
    ("tests/integration/test_failure_handling.py",
     "DLQ, unwritable DLQ, stuck record, poison input, missing topic, readiness, broker outage (own broker)"),
    ("tests/integration/test_lifecycle.py", "lifecycle pause/resume, hold, stale generation"),
)
"""The core integration tests of issue 16 (delivery, order, restart, rebalance, offset map, DLQ, lifecycle), with
what each covers. ``test_process_engine_kafka.py`` (a killed worker process of the process engine) is left out: it
tests the engine's own recovery, which does not depend on the broker's release."""
DEFAULT_DOC = Path("docs/compatibility.md")
VERSION_TIMEOUT_S = 3600.0
"""Ceiling of one pytest run; pytest-timeout (300 s per test) normally ends a hang long before."""
_MESSAGE_CHARS = 160


@dataclass(frozen=True)
class TestOutcome:
    """One JUnit ``testcase``: its pytest node id and what became of it."""

    __test__ = False  # not a pytest test class despite its name

    node_id: str
    status: str
    """``passed``, ``failed``, ``error`` or ``skipped``."""
    message: str = ""


@dataclass(frozen=True)
class JunitSummary:
    """What one pytest run reported in its JUnit XML."""

    outcomes: tuple[TestOutcome, ...]
    seconds: float
    """The suites' own time (pytest's, without interpreter start)."""

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def tests(self) -> int:
        return len(self.outcomes)

    @property
    def passed(self) -> int:
        return self.count("passed")

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def errors(self) -> int:
        return self.count("error")

    @property
    def skipped(self) -> int:
        return self.count("skipped")

    @property
    def bad(self) -> tuple[TestOutcome, ...]:
        """The failed and errored tests: what the re-run repeats."""
        return tuple(o for o in self.outcomes if o.status in ("failed", "error"))


@dataclass
class Attempt:
    """One pytest run against one fresh broker: its summary (None when the broker or pytest gave none), the wall
    time of the pytest subprocess, its exit code and why it has no summary."""

    summary: JunitSummary | None
    wall_s: float
    exit_code: int | None
    problem: str = ""

    @property
    def clean(self) -> bool:
        return (self.summary is not None and not self.summary.bad and self.exit_code == 0
                and self.summary.tests > 0)


@dataclass
class VersionResult:
    """The first run of a version and, when it was not clean, the re-run of its failures."""

    version: str
    first: Attempt
    rerun: Attempt | None = None

    @property
    def verdict(self) -> str:
        """``passed``; ``flaky`` (failures that passed on their re-run); ``failed``."""
        if self.first.clean:
            return "passed"
        if self.rerun is not None and self.rerun.clean and self.first.summary is not None:
            return "flaky"
        return "failed"


@dataclass
class MatrixReport:
    """Everything ``render_doc`` writes: the results and where they came from."""

    results: list[VersionResult]
    started: datetime
    total_s: float
    machine: str
    client: str
    python: str
    java: str
    command: str
    files: Sequence[tuple[str, str]] = CORE_TEST_FILES
    extra_args: Sequence[str] = field(default_factory=tuple)


def _node_id(classname: str, name: str, root: Path) -> str:
    """pytest's node id from a JUnit classname (``tests.integration.test_x`` or ``...test_x.TestClass``): the
    longest dotted prefix that is a file under ``root`` is the module, the rest are classes."""
    parts = classname.split(".") if classname else []
    for cut in range(len(parts), 0, -1):
        module = Path(*parts[:cut]).with_suffix(".py")
        if (root / module).is_file():
            return "::".join([module.as_posix(), *parts[cut:], name])
    return "::".join([*parts, name]) if parts else name


def _first_line(text: str | None) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= _MESSAGE_CHARS else line[: _MESSAGE_CHARS - 3] + "..."


def parse_junit(xml_text: str, root: Path = Path()) -> JunitSummary:
    """Read pytest's JUnit XML (``<testsuites>`` or a bare ``<testsuite>``): one outcome per ``testcase``, a failure
    winning over an error (a failed test whose teardown also failed) and both over a skip. ``root`` is where the
    test files' paths start, to rebuild node ids the re-run can name."""
    tree = ET.fromstring(xml_text)  # noqa: S314 - pytest's own output, written a moment ago
    suites = [tree] if tree.tag == "testsuite" else tree.findall("testsuite")
    outcomes: list[TestOutcome] = []
    seconds = 0.0
    for suite in suites:
        with contextlib.suppress(ValueError):
            seconds += float(suite.get("time", "0"))
        for case in suite.iter("testcase"):
            node = _node_id(case.get("classname", ""), case.get("name", ""), root)
            failure, error, skipped = case.find("failure"), case.find("error"), case.find("skipped")
            if failure is not None:
                outcome = TestOutcome(node, "failed", _first_line(failure.get("message") or failure.text))
            elif error is not None:
                outcome = TestOutcome(node, "error", _first_line(error.get("message") or error.text))
            elif skipped is not None:
                outcome = TestOutcome(node, "skipped", _first_line(skipped.get("message")))
            else:
                outcome = TestOutcome(node, "passed")
            outcomes.append(outcome)
    return JunitSummary(tuple(outcomes), seconds)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(result: VersionResult) -> str:
    first = result.first
    s = first.summary
    counts = ([str(s.tests), str(s.passed), str(s.failed), str(s.skipped), str(s.errors)] if s is not None
              else ["-"] * 5)
    rerun = "-"
    if result.rerun is not None:
        r = result.rerun.summary
        rerun = (f"{r.passed} of {r.tests} passed" if r is not None
                 else f"no result ({_cell(result.rerun.problem)})")
    verdict = {"passed": "pass", "flaky": "pass on re-run (flaky)", "failed": "**FAIL**"}[result.verdict]
    return (f"| {result.version} | {connect_version(result.version)} | " + " | ".join(counts)
            + f" | {first.wall_s:.0f} | {rerun} | {verdict} |")


def render_doc(report: MatrixReport) -> str:
    """The whole of ``docs/compatibility.md`` for one matrix run (pure: the caller writes it)."""
    lines = [
        "# Compatibility matrix",
        "",
        "The core integration tests against each tested Apache Kafka release, every version on a fresh local "
        "broker (one KRaft node, no Connect worker). Written by `make test-matrix` "
        "(`python -m pyrallel_tools.compat_matrix`); the last run's result:",
        "",
        f"- Date: {report.started.strftime('%Y-%m-%d %H:%M')} UTC, whole matrix {report.total_s:.0f} s",
        f"- Machine: {report.machine}",
        f"- Client: {report.client}",
        f"- Python: {report.python}",
        f"- Java: {report.java}",
        f"- Command: `{report.command}`",
        "",
        "| Kafka | Connect worker | tests | passed | failed | skipped | errors | wall s | re-run of failures "
        "| result |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
        *[_row(r) for r in report.results],
        "",
        "*wall s* is the pytest run's own wall time (broker start and stop not included). A version whose first run "
        "had failures gets one re-run of just those tests on a fresh broker of the same version: passing there "
        "marks them as flakes of a loaded machine, failing again as a real problem with that release.",
        "",
    ]
    failing = [r for r in report.results if not r.first.clean]
    if failing:
        lines += ["## Failures", ""]
        for result in failing:
            lines.append(f"Kafka {result.version}, first run:")
            lines.append("")
            lines += _failure_lines(result.first)
            if result.rerun is not None:
                lines.append(f"Re-run of those tests on a fresh Kafka {result.version} broker:")
                lines.append("")
                lines += _failure_lines(result.rerun, show_passed=True)
    else:
        lines += ["Every test passed on every version at the first run.", ""]
    lines += [
        "## What runs",
        "",
        "| file | covers |",
        "|---|---|",
        *[f"| `{path}` | {what} |" for path, what in report.files],
        "",
        "`tests/integration/test_process_engine_kafka.py` is not part of the matrix: it kills a worker process of "
        "the process engine, a recovery of the engine itself that does not depend on the broker's release (it runs "
        "in `make test`).",
        "",
        "- One broker per version, started on a free port in a temporary run directory and stopped afterwards "
        "(`LocalKafka(run_dir).up(version=V, with_connect=False)`); the 3-broker fault suite is not part of the "
        "matrix.",
        f"- The tests get `PYRALLEL_BOOTSTRAP_SERVERS` of that broker and `{KAFKA_VERSION_ENV}=V`, so a test that "
        "starts a broker of its own (the broker outage test of `test_failure_handling.py`) starts the same release.",
        "- Jars come from Maven Central, one cache directory per version (`~/.cache/pyrallel/kafka-V/libs`, "
        "resolved by the matrix itself on a fresh machine). The *Connect worker* column is the release of the Kafka "
        "Connect worker `pyrallel kafka up --connect` starts beside brokers of that version (strategy E's "
        "FileStreamSink): Maven Central does not serve the `connect-file` jar of every release, so the worker runs "
        "the nearest earlier one that has it. The matrix starts no Connect worker.",
    ]
    if report.extra_args:
        lines.append(f"- Extra pytest arguments of this run: `{shlex.join(report.extra_args)}`.")
    lines += [
        "",
        "## Re-running",
        "",
        "```bash",
        "make test-matrix                                             # every version, rewrites this file",
        'make test-matrix MATRIX_ARGS="--versions 4.3.2 -- -x"       # arguments of the matrix, then of pytest',
        ".venv/bin/python -m pyrallel_tools.compat_matrix --versions 4.2.2 4.4.0   # some versions",
        ".venv/bin/python -m pyrallel_tools.compat_matrix --doc /tmp/m.md -- -k rebalance -x   # pytest arguments",
        "pyrallel kafka up --kafka-version 4.2.2     # one version by hand (or PYRALLEL_KAFKA_VERSION=4.2.2)",
        "```",
        "",
    ]
    return "\n".join(lines)


def _failure_lines(attempt: Attempt, show_passed: bool = False) -> list[str]:
    lines: list[str] = []
    if attempt.summary is None:
        lines.append(f"- no result: {attempt.problem or 'pytest wrote no JUnit XML'}")
    else:
        for outcome in attempt.summary.outcomes:
            if outcome.status in ("failed", "error"):
                detail = f": {_cell(outcome.message)}" if outcome.message else ""
                lines.append(f"- {outcome.status}: `{outcome.node_id}`{detail}")
            elif show_passed and outcome.status == "passed":
                lines.append(f"- passed: `{outcome.node_id}`")
        if attempt.exit_code not in (0, None) and not attempt.summary.bad:
            lines.append(f"- pytest exited {attempt.exit_code} without a failed test")
    lines.append("")
    return lines


def _run_pytest(targets: Sequence[str], env: dict[str, str], xml: Path, log_path: Path,
                extra_args: Sequence[str], root: Path) -> Attempt:
    """One pytest subprocess in its own session (its consumer and worker processes are ended with it on a
    timeout), output to ``log_path``."""
    cmd = [sys.executable, "-m", "pytest", *targets, "-p", "no:cacheprovider", "-o", "junit_family=xunit2",
           f"--junitxml={xml}", *extra_args]
    log.info("  %s", shlex.join(cmd))
    started = time.monotonic()
    with log_path.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            code: int | None = proc.wait(timeout=VERSION_TIMEOUT_S)
            problem = ""
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code, problem = None, f"pytest did not finish within {VERSION_TIMEOUT_S:.0f} s"
    wall = time.monotonic() - started
    summary = None
    if xml.is_file():
        try:
            summary = parse_junit(xml.read_text(), root)
        except ET.ParseError as exc:
            problem = problem or f"unreadable JUnit XML: {exc}"
    elif not problem:
        problem = f"pytest exited {code} without JUnit XML"
    return Attempt(summary, wall, code, problem)


def run_attempt(version: str, targets: Sequence[str], work: Path, name: str, extra_args: Sequence[str],
                root: Path) -> Attempt:
    """A fresh one-broker cluster of ``version``, pytest on ``targets`` against it, the cluster stopped (always)."""
    cluster = LocalKafka(work / f"{name}-run")
    try:
        state, _notes = cluster.up(version=version, with_connect=False, port=free_port())
        log.info("Kafka %s up at %s (%s)", version, state.bootstrap, name)
        env = dict(os.environ)
        env.pop("PYRALLEL_CONNECT_URL", None)
        env.update({"PYRALLEL_BOOTSTRAP_SERVERS": state.bootstrap, KAFKA_VERSION_ENV: version})
        return _run_pytest(targets, env, work / f"{name}.xml", work / f"{name}.log", extra_args, root)
    except LocalKafkaError as exc:
        log.error("Kafka %s could not run: %s", version, exc)
        return Attempt(None, 0.0, None, _first_line(str(exc)))
    finally:
        cluster.down()


def run_version(version: str, work: Path, extra_args: Sequence[str], root: Path, rerun: bool = True) -> VersionResult:
    """The core files against ``version``; failed tests once more on a fresh broker when ``rerun``."""
    targets = [path for path, _ in CORE_TEST_FILES]
    result = VersionResult(version, run_attempt(version, targets, work, version, extra_args, root))
    _log_attempt(version, "first run", result.first, work / f"{version}.log")
    summary = result.first.summary
    if rerun and not result.first.clean and summary is not None and summary.bad:
        again = [o.node_id for o in summary.bad]
        log.info("Kafka %s: re-running %d failed test(s) on a fresh broker", version, len(again))
        result.rerun = run_attempt(version, again, work, f"{version}-rerun", extra_args, root)
        _log_attempt(version, "re-run", result.rerun, work / f"{version}-rerun.log")
    return result


def _log_attempt(version: str, what: str, attempt: Attempt, log_path: Path) -> None:
    s = attempt.summary
    if s is None:
        log.error("Kafka %s %s: no result (%s); pytest output: %s", version, what, attempt.problem, log_path)
        return
    log.info("Kafka %s %s: %d tests, %d passed, %d failed, %d skipped, %d errors in %.0f s", version, what, s.tests,
             s.passed, s.failed, s.skipped, s.errors, attempt.wall_s)
    for outcome in s.bad:
        log.warning("  %s %s: %s", outcome.status, outcome.node_id, outcome.message)
    if s.bad:
        log.warning("  pytest output: %s", log_path)


def _java_version() -> str:
    try:
        out = subprocess.run([java_executable(), "-version"], capture_output=True, text=True, timeout=60,
                             check=False)
    except (LocalKafkaError, OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    return _first_line(out.stderr or out.stdout)


def _client_version() -> str:
    import confluent_kafka

    client = confluent_kafka.version()  # a str in 2.16; a (str, int) tuple in older releases, like libversion()
    lib = confluent_kafka.libversion()
    client_text = client[0] if isinstance(client, tuple) else client
    lib_text = lib[0] if isinstance(lib, tuple) else lib
    return f"confluent-kafka {client_text}, librdkafka {lib_text}"


def _machine(note: str, load: float) -> str:
    """The cores and the 1-minute load average when the matrix started: the timings mean little without them."""
    text = f"{os.cpu_count()} cores, {platform.system()} {platform.machine()}, load average {load:.1f} at the start"
    return f"{text}; {note}" if note else text


def _parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    args = list(argv)
    extra: list[str] = []
    if "--" in args:
        cut = args.index("--")
        args, extra = args[:cut], args[cut + 1:]
    parser = argparse.ArgumentParser(prog="python -m pyrallel_tools.compat_matrix",
                                     description="Core integration tests against each tested Kafka release.")
    parser.add_argument("--versions", nargs="+", default=list(COMPATIBILITY_VERSIONS), metavar="V",
                        help="Kafka releases to run (default: %(default)s)")
    parser.add_argument("--doc", type=Path, default=DEFAULT_DOC, help="where the result goes (default: %(default)s)")
    parser.add_argument("--no-rerun", action="store_true", help="do not re-run failed tests to spot flakes")
    parser.add_argument("--note", default="", help="a sentence about the machine for the document (its load)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (pytest output, JUnit XML)")
    return parser.parse_args(args), extra


def main(argv: Sequence[str] | None = None) -> int:
    """Run the matrix, write the document; 1 when a failure reproduced or a version could not run."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    raw = sys.argv[1:] if argv is None else argv
    args, extra = _parse_args(raw)
    root = Path.cwd()
    for version in args.versions:
        try:
            check_version(version)
        except LocalKafkaError as exc:
            log.error("%s", exc)
            return 2
    missing = [path for path, _ in CORE_TEST_FILES if not (root / path).is_file()]
    if missing:
        log.error("Run from the repository's root: %s not found", ", ".join(missing))
        return 2
    work = Path(tempfile.mkdtemp(prefix="pyrallel-matrix-"))
    started, clock, load = datetime.now(UTC), time.monotonic(), os.getloadavg()[0]
    results: list[VersionResult] = []
    try:
        for version in args.versions:
            results.append(run_version(version, work, extra, root, rerun=not args.no_rerun))
    finally:
        if args.keep or any(r.verdict != "passed" for r in results):
            log.info("Pytest output and JUnit XML kept in %s", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    report = MatrixReport(
        results=results, started=started, total_s=time.monotonic() - clock, machine=_machine(args.note, load),
        client=_client_version(), python=f"{platform.python_implementation()} {platform.python_version()}",
        java=_java_version(), command=" ".join(["python -m pyrallel_tools.compat_matrix", shlex.join(raw)]).strip(),
        extra_args=extra,
    )
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(render_doc(report))
    log.info("Wrote %s", args.doc)
    for result in results:
        log.info("Kafka %s: %s", result.version, result.verdict)
    return 1 if any(r.verdict == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
