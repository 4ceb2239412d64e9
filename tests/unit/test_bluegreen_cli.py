"""Bad input to the switch and scenario commands is answered with one clear line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pyrallel_consumer.bluegreen.controller import other_color
from pyrallel_tools.bluegreen import scenarios
from pyrallel_tools.bluegreen.run_spec import RunOptions, ScenarioError
from pyrallel_tools.bluegreen.scenarios import ScenarioRun
from pyrallel_tools.cli.main import cli
from pyrallel_tools.cli.scenario_cmds import plan

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["switch", "--strategy", "C", "--to", "green", "--deployment", "d", "--health-window", "0"],
         "strategy C needs --blue and --green control URLs"),
        (["switch", "--strategy", "B", "--to", "green", "--deployment", "d", "--blue", "http://127.0.0.1:1",
          "--green", "http://127.0.0.1:2", "--health-window", "0"], "strategy B needs --blue-group and --green-group"),
        (["switch", "--strategy", "E", "--to", "green", "--deployment", "d", "--health-window", "0"],
         "strategy E needs --connect-url"),
        (["switch", "--strategy", "X", "--to", "green", "--deployment", "d"], "'X' is not one of 'B', 'C', 'E'"),
        (["scenario", "run", "--strategy", "B", "--scenario", "4"], "no run applies"),
        (["scenario", "run", "--strategy", "E", "--scenario", "1"], "strategy E needs --connect-url"),
        (["scenario", "run", "--strategy", "C", "--scenario", "4", "--driver", "kubernetes"],
         "no run applies: the Kubernetes driver runs scenarios 1, 2, 6; run scenario 4 with --driver direct"),
        (["scenario", "run", "--strategy", "C", "--scenario", "1", "--kubeconfig", "pyproject.toml"],
         "--kubeconfig goes with --driver kubernetes"),
        (["controller", "serve", "--deployment", "d", "--token", " "], "must not be empty or whitespace only"),
    ],
)
def test_bad_switch_and_scenario_input(args: list[str], message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYRALLEL_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.delenv("PYRALLEL_CONNECT_URL", raising=False)
    monkeypatch.setattr("pyrallel_tools.cli.switch_cmds.SwitchController",
                        lambda deployment, controller_id: type("Fake", (), {"deployment": deployment})())
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_plan_skips_what_does_not_apply() -> None:
    runs = plan(["B", "C", "E"], [1, 3, 4, 5])
    assert ("C", 4, "static") in runs
    assert ("C", 4, "dynamic") in runs
    assert not [r for r in runs if r[1] == 4 and r[0] != "C"]
    assert not [r for r in runs if r[0] == "E" and r[1] in (3, 5)]
    assert ("B", 3, "switch-now") in runs


@pytest.mark.parametrize(("strategy", "scenario", "variant", "message"), [
    ("B", 4, "static", "scenario 4 is for strategy C only"),
    ("E", 5, None, "need fault injection"),
    ("C", 3, None, "variants"),
    ("Z", 1, None, "strategy must be B, C or E"),
])
def test_scenario_combinations_are_checked(strategy: str, scenario: int, variant: str | None, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        ScenarioRun(strategy, scenario, variant, RunOptions(bootstrap="127.0.0.1:1", connect_url="http://x"))


def test_other_color() -> None:
    assert other_color("blue") == "green"
    with pytest.raises(ValueError, match="blue or green"):
        other_color("red")


def test_a_run_whose_set_up_fails_stops_the_consumers_it_started(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A consumer that never became ready fails the set-up; the others must not run on after the run."""
    run = ScenarioRun("C", 1, None, RunOptions(bootstrap="127.0.0.1:1", work_dir=tmp_path, out_dir=tmp_path))
    stopped: list[str] = []

    class Started:
        def __init__(self, name: str) -> None:
            self.name = name

        def stop(self) -> None:
            stopped.append(self.name)

    def start_consumers() -> None:
        run.fleet.instances["blue"].append(Started("blue-1"))  # type: ignore[arg-type]
        raise ScenarioError("green-1 exited with 1")

    monkeypatch.setattr(scenarios, "create_topic", lambda *_args: None)
    monkeypatch.setattr(scenarios, "ActiveColorWriter", lambda *_args: type("W", (), {"write": lambda *_a: None})())
    monkeypatch.setattr(run.fleet, "start_consumers", start_consumers)
    with pytest.raises(ScenarioError, match="green-1 exited"):
        run.execute()
    assert stopped == ["blue-1"]


def test_the_lazy_command_table_matches_the_commands() -> None:
    """`pyrallel --help` shows the table's summaries without importing the commands: they must say the same."""
    import click

    from pyrallel_tools.cli.main import COMMANDS, LazyGroup

    group = LazyGroup()
    ctx = click.Context(cli)
    for name, (_module, summary) in COMMANDS.items():
        command = group.get_command(ctx, name)
        assert command is not None and command.name == name
        assert command.get_short_help_str(limit=1000) == summary


def test_help_imports_no_sub_command() -> None:
    import subprocess
    import sys

    code = ("import sys; from click.testing import CliRunner; from pyrallel_tools.cli.main import cli; "
            "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0 and 'validate' in r.output; "
            "print(sorted(m for m in sys.modules if m.startswith(('pyrallel_tools.', 'confluent_kafka', "
            "'pyrallel_consumer.')) and m != 'pyrallel_tools.cli.main' and m != 'pyrallel_tools.cli'))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--readme benchmarks/README.md does not exist"),
        (["--suite", "core"], "--peers-dir benchmarks/peers does not exist"),
    ],
)
def test_bench_outside_a_checkout_says_which_path_is_missing(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["bench", "--bootstrap-servers", "127.0.0.1:1", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_the_kubernetes_driver_refuses_the_scenarios_it_does_not_act_out() -> None:
    options = RunOptions(bootstrap="127.0.0.1:1", driver="kubernetes")
    with pytest.raises(ScenarioError, match="the Kubernetes driver runs scenarios 1, 2, 6; run scenario 4 with"):
        ScenarioRun("C", 4, "dynamic", options)
    assert ScenarioRun("C", 6, None, options).kube is not None
