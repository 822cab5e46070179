"""The README's commands run as written against the shipped files.

One real server (`ServerProcess`: the shipped `deploy/routing.toml` and `models/`, OS-chosen
ports on 127.0.0.1) answers every example; the documented addresses 127.0.0.1:50051 and
127.0.0.1:50052 are replaced by its ports. What runs:

- every ```sh block of README.md whose commands are all grpcurl calls, `waybill` CLI calls
  (`.venv/bin/waybill`, run as `python -m server.runtime.cli` of this checkout), the canary
  script, or `mkdir`/`cp` of files (in a temporary directory holding a copy of `deploy/`, so
  the shipped files are never edited); each must exit 0, and the routing check's output must
  be the one the README prints after it (sha256 aside);
- the inline `waybill ...` commands of README.md (`waybill drift` gets `--admin`);
- the ```python blocks of README.md, and those of clients/python/README.md (run together,
  the outcome example reuses the first one's `rows`), but for the tritonclient example:
  tests/test_inference_protocol.py runs that one, in tritonclient's own venv.

Left out, and why (`skipped_blocks` lists them as found):

- `make serve` / `make test`: build a virtual environment and run the whole suite;
- `pip install ...`: installs into the environment;
- the training block (`waybill datagen`, `waybill train`, `make models`): about a minute of
  training, and it writes a 1.2.0 into the shipped registry (docs/runbook.md shows what the
  model gate says of it);
- any block that starts a server (`waybill serve` without `--help`), or calls docker,
  kubectl or another tool a test cannot assume.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import ROOT, ServerProcess

README = ROOT / "README.md"
CLIENT_README = ROOT / "clients" / "python" / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.MULTILINE | re.DOTALL)
SHA = re.compile(r"sha256 [0-9a-f]{12}")

# First words of the commands the test can run; of the waybill subcommands, all but these.
RUNNABLE = {"grpcurl", "mkdir", "cp", "waybill", ".venv/bin/waybill", ".venv/bin/python"}
WAYBILL_SKIPPED = {"serve", "datagen", "train"}  # a server, training data, a minute of training


def fenced_blocks(path: Path) -> list[tuple[str, str, int]]:
    """(language, body, end offset) of every fenced block, in order."""
    return fenced_blocks_in(path.read_text())


def fenced_blocks_in(text: str) -> list[tuple[str, str, int]]:
    return [(m.group(1), m.group(2), m.end()) for m in FENCE.finditer(text)]


def balanced(command: str) -> bool:
    try:
        shlex.split(command, comments=True)
    except ValueError:  # an open quote: the command goes on on the next line
        return False
    return True


def commands(block: str) -> list[str]:
    """The shell commands of a block: continuations and quoted newlines joined, heredoc
    bodies kept with their command, comment lines and blank lines dropped."""
    out: list[str] = []
    lines = block.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        command = line
        while (command.endswith("\\") or not balanced(command)) and i < len(lines):
            command = (command[:-1] + " " if command.endswith("\\") else command + "\n") \
                + lines[i]
            i += 1
        heredoc = re.search(r"<<-?'?(\w+)'?", command)
        if heredoc:
            body = []
            while i < len(lines) and lines[i].strip() != heredoc.group(1):
                body.append(lines[i])
                i += 1
            i += 1
            command = "\n".join([command, *body, heredoc.group(1)])
        out.append(command)
    return out


def why_not_runnable(command: str) -> str | None:
    """None when the test can run the command as written, else the reason it cannot."""
    lexer = shlex.shlex(command.split("<<")[0], posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    parts: list[list[str]] = [[]]
    for token in tokens:
        if token in ("&&", "||", "|", ";", "&"):
            parts.append([])
        else:
            parts[-1].append(token)
    for words in parts:
        if not words:
            continue
        first = words[0]
        if first not in RUNNABLE:
            return f"{first}: not run by tests"
        if first.endswith("python") and (len(words) < 2
                                          or words[1] != "deploy/scripts/canary.py"):
            return "python: only the canary script runs"
        skipped = len(words) < 2 or words[1] in WAYBILL_SKIPPED
        if first.endswith("waybill") and skipped and "--help" not in words:
            return f"waybill {words[1] if len(words) > 1 else ''}: not run by tests"
    return None


def why_not_runnable_block(body: str) -> str | None:
    reasons = [r for r in map(why_not_runnable, commands(body)) if r]
    return reasons[0] if reasons else None


def sh_blocks(path: Path) -> Iterator[tuple[str, list[str], str | None]]:
    for language, body, _ in fenced_blocks(path):
        if language in ("sh", "bash"):
            yield body, commands(body), why_not_runnable_block(body)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server on the shipped routing file and registry."""
    with ServerProcess(tmp_path_factory.mktemp("docs-server")) as server:
        yield server


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory with a copy of deploy/ and a `.venv/bin` that runs this
    checkout: `.venv/bin/waybill` is `python -m server.runtime.cli`."""
    return make_workdir(tmp_path_factory.mktemp("docs-work"))


def make_workdir(work: Path) -> Path:
    """``work`` with a copy of deploy/ and the `.venv/bin` shims (see ``workdir``)."""
    shutil.copytree(ROOT / "deploy", work / "deploy", symlinks=True)
    bin_dir = work / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = shlex.quote(sys.executable)
    for name, line in (("waybill", f'exec {python} -m server.runtime.cli "$@"'),
                       ("python", f'exec {python} "$@"')):
        (bin_dir / name).write_text(f"#!/bin/sh\n{line}\n")
        (bin_dir / name).chmod(0o755)
    return work


def grpcurl() -> str | None:
    found = shutil.which("grpcurl")
    beside = Path(sys.executable).parent / "grpcurl"
    return found or (str(beside) if beside.exists() else None)


def run(script: str, server: ServerProcess, workdir: Path) -> subprocess.CompletedProcess[str]:
    script = (script.replace("127.0.0.1:50051", server.target)
              .replace("127.0.0.1:50052", server.admin_target))
    tools = Path(grpcurl() or sys.executable).parent
    path = [ROOT, ROOT / "clients" / "python", ROOT / "protos" / "python"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, path)),
           "PATH": f"{workdir / '.venv' / 'bin'}{os.pathsep}{tools}{os.pathsep}"
                   f"{os.environ.get('PATH', '')}"}
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_readme_blocks_are_classified() -> None:
    """Every sh block either runs or is one of the kinds the module docstring lists."""
    blocks = list(sh_blocks(README))
    ran = [cmds for _, cmds, why in blocks if why is None]
    skipped = {why for _, _, why in blocks if why is not None}
    assert len(ran) >= 5, ran
    assert any("routing check" in c for cmds in ran for c in cmds)
    assert skipped <= {"make: not run by tests", "pip: not run by tests",
                       "waybill datagen: not run by tests", "waybill serve: not run by tests",
                       "docker: not run by tests", "kubectl: not run by tests"}, skipped


def test_the_readme_shell_examples_run(shipped: ServerProcess, workdir: Path) -> None:
    if grpcurl() is None:
        pytest.skip("no grpcurl (make test installs one in .venv/bin)")
    text = README.read_text()
    blocks = fenced_blocks(README)
    for index, (language, body, end) in enumerate(blocks):
        if language not in ("sh", "bash") or why_not_runnable_block(body):
            continue
        result = run(body, shipped, workdir)
        assert result.returncode == 0, f"{body}\n--- stdout\n{result.stdout}\n" \
                                       f"--- stderr\n{result.stderr}"
        if "routing check" in body:
            # The README prints the output right after the block: it must be this one.
            after = text[end:]
            assert after.lstrip().startswith("prints (exit status 0):"), after[:200]
            documented = blocks[index + 1][1]
            assert SHA.sub("sha256 X", result.stdout) == SHA.sub("sha256 X", documented)
            assert "#### delivery_eta: changed" in result.stdout


def test_the_readme_inline_waybill_commands_run(shipped: ServerProcess, workdir: Path) -> None:
    inline = re.findall(r"`((?:\.venv/bin/)?waybill [a-z][^`]*)`", README.read_text())
    ran = []
    for command in inline:
        words = command.split()
        if why_not_runnable(command):
            continue  # e.g. `waybill serve`: the fixture is the server
        if words[1] == "drift" and "--admin" not in words:
            command += " --admin 127.0.0.1:50052"
        result = run(command, shipped, workdir)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        ran.append(words[1])
    assert {"drift", "serve"} <= set(ran), inline
    assert (workdir / "drift.png").read_bytes()[:4] == b"\x89PNG"


def python_blocks(path: Path) -> list[str]:
    """The Python examples that run in Waybill's venv (tritonclient cannot be in it)."""
    return [body for language, body, _ in fenced_blocks(path)
            if language == "python" and "import tritonclient" not in body]


@pytest.mark.parametrize("path", [README, CLIENT_README], ids=["README", "client-README"])
def test_the_python_examples_run(shipped: ServerProcess, workdir: Path, path: Path) -> None:
    code = "\n".join(python_blocks(path))
    assert code
    result = run(f"python - <<'PYTHON'\n{code}\nPYTHON", shipped, workdir)
    assert result.returncode == 0, f"{code}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    if path == README:  # a prediction pinned to 1.0.0, then three stream answers
        assert re.match(r"1\.0\.0 pinned \d{4}-\d\d-\d\d$", lines[0]), result.stdout
        assert lines[2].startswith("refused: [('rows[0].distance_km'"), result.stdout
    else:  # a prediction (not violations), then 3 outcomes recorded, 0 duplicates
        assert re.match(r"\d+\.\d+\.\d+ default [\d.]+ \d{4}-\d\d-\d\d$", lines[0]), \
            result.stdout
        assert lines[-1] == "3 0", result.stdout
