"""docs/models.md's walkthrough runs as written, in order, against a real server.

The notebook block trains and saves a model in a temporary directory; the shell blocks
import it, route to it, call it with grpcurl, report an outcome and read the accuracy.
The `waybill serve` block is the one command not run as written: the test starts
`ServerProcess` with the same arguments (OS-chosen ports replace 127.0.0.1:50051/50052).
README.md's "Your own model" section must use the same commands.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import catboost
import pandas as pd
import pytest

from tests.harness import ROOT, ServerProcess
from tests.test_doc_commands import commands, fenced_blocks_in, grpcurl, make_workdir, run

DOC = ROOT / "docs" / "models.md"
README = ROOT / "README.md"


class NoServer:
    """Until the serve block, nothing may call a server."""

    target = admin_target = "127.0.0.1:9"  # the discard port: a call would fail


def walkthrough() -> list[tuple[str, str]]:
    """(language, body) of the walkthrough's runnable blocks, in order."""
    text = DOC.read_text()
    start, end = text.index("## The walkthrough"), text.index("## Point regressors")
    section = text[start:end]
    return [(language, body) for language, body, _ in fenced_blocks_in(section)
            if language in ("python", "sh")]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return make_workdir(tmp_path)


def test_the_walkthrough_runs_as_written(workdir: Path) -> None:
    if grpcurl() is None:
        pytest.skip("no grpcurl (make test installs one in .venv/bin)")
    server: ServerProcess | NoServer = NoServer()
    outputs: list[str] = []
    try:
        for language, body in walkthrough():
            if language == "python":
                result = run(f"python - <<'PYTHON'\n{body}\nPYTHON", server, workdir)  # type: ignore[arg-type]
            elif any(c.startswith("waybill serve") for c in commands(body)):
                (command,) = commands(body)
                args = shlex.split(command)[2:]
                args = [str(workdir / a) if (workdir / a).exists() else a for a in args]
                server = ServerProcess(workdir / "server", *args).start()
                continue
            else:
                result = run(body, server, workdir)  # type: ignore[arg-type]
            assert result.returncode == 0, f"{body}\n--- stdout\n{result.stdout}\n" \
                                           f"--- stderr\n{result.stderr}"
            outputs.append(result.stdout)
    finally:
        if isinstance(server, ServerProcess):
            server.stop()
    notebook, imported, routed, predicted, reported = outputs
    assert "imported arrival_delay 1.0.0 (regression, loss RMSE)" in imported
    assert "ok      arrival_delay 1.0.0" in imported
    assert "#### arrival_delay" in routed or "arrival_delay" in routed
    # The served value is the notebook model's own prediction of the row.
    answer = json.loads(predicted)
    (prediction,) = answer["predictions"]
    model = catboost.CatBoostRegressor()
    model.load_model(str(workdir / "arrival_delay.cbm"))
    row = pd.DataFrame([{"distance_km": 120.5, "carrier": "ax", "hour": 9}])
    assert prediction["value"] == pytest.approx(float(model.predict(row)[0]), abs=1e-9)
    assert answer["kind"] == "regression"
    assert "transit_days" not in prediction and "delivery_date" not in prediction
    assert prediction["interval"]["coverage"] == 0.8
    # The outcome was recorded, and the accuracy is its error, in minutes.
    recorded, accuracy = (json.loads(part) for part in _json_documents(reported))
    assert recorded == {"recorded": 1}
    (version,) = accuracy["versions"]
    assert version["outcomes"] == "1" and version["kind"] == "regression"
    assert float(version["mae"]) > 0 and version["has_interval"] is True
    assert notebook.strip()  # the notebook printed its own prediction


def _json_documents(text: str) -> list[str]:
    """grpcurl prints one JSON document per call; split them."""
    decoder, out, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        _, end = decoder.raw_decode(text, i)
        out.append(text[i:end])
        i = end
    return out


def test_the_readme_section_uses_the_walkthroughs_commands() -> None:
    text = README.read_text()
    start = text.index("## Your own model")
    section = text[start:text.index("\n## ", start + 1)]
    documented = {c for _, body, _ in fenced_blocks_in(DOC.read_text()) for c in commands(body)}
    shown = [c for _, body, _ in fenced_blocks_in(section) for c in commands(body)]
    assert len(shown) >= 4, section
    for command in shown:
        assert command in documented, command
