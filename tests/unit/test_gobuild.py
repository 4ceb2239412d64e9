"""The Go tool cache builds each tool once: two builders at once share one build, an edited input rebuilds."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

# Stands in for `go`: records each call, then writes the binary `go install` would (into $GOBIN), slowly enough
# that a second builder started alongside arrives while the first one still builds.
FAKE_GO = textwrap.dedent("""\
    #!/bin/sh
    echo "$@" >> "$FAKE_GO_CALLS"
    sleep 1
    printf '#!/bin/sh\\necho built\\n' > "$GOBIN/tool"
    chmod +x "$GOBIN/tool"
""")

BUILDER = textwrap.dedent("""\
    import sys
    from pathlib import Path
    from pyrallel_tools.gobuild import GoBuild, ensure_go_tools
    inputs = tuple(Path(p) for p in sys.argv[1:])
    build = GoBuild("tool", ["go", "install", "example.com/tool@v1"], output="tool", inputs=inputs)
    print(ensure_go_tools("tool-v1", [build], "the test tool"))
""")


@pytest.fixture
def fake_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    go = bin_dir / "go"
    go.write_text(FAKE_GO)
    go.chmod(0o755)
    calls = tmp_path / "calls"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_GO_CALLS", str(calls))
    monkeypatch.setenv("PYRALLEL_CACHE_DIR", str(tmp_path / "cache"))
    return calls


def _builders(count: int, *inputs: Path) -> list[str]:
    procs = [subprocess.Popen([sys.executable, "-c", BUILDER, *map(str, inputs)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(count)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        outputs.append(out.strip())
    return outputs


def test_two_builders_at_once_build_once(fake_go: Path) -> None:
    outputs = _builders(2)
    assert len(set(outputs)) == 1
    assert len(fake_go.read_text().splitlines()) == 1, "the second builder waited and reused the first one's build"
    assert subprocess.run([f"{outputs[0]}/tool"], capture_output=True, text=True, check=True).stdout == "built\n"


def test_an_edited_input_rebuilds_and_an_unchanged_one_does_not(fake_go: Path, tmp_path: Path) -> None:
    go_mod = tmp_path / "go.mod"
    go_mod.write_text("module example.com/wrapper\n")
    _builders(1, go_mod)
    _builders(1, go_mod)
    assert len(fake_go.read_text().splitlines()) == 1
    go_mod.write_text("module example.com/wrapper\n\nrequire example.com/tool v2\n")
    _builders(1, go_mod)
    assert len(fake_go.read_text().splitlines()) == 2
