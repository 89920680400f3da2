"""Models built on this host: two campaigns fetching the same tiny model at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO

_RESOLVE = """
import json, sys
from evallab.models import resolve_model
from evallab.spec import TinyModelSpec
spec = TinyModelSpec(name="tiny", source="tiny", seed=5, layers=1, hidden=64)
art = resolve_model(spec, __import__("pathlib").Path("."))
print(json.dumps({"sha256": art.sha256, "path": str(art.path)}))
"""


def test_two_processes_fetching_one_tiny_model_get_the_same_complete_folder(
    tmp_path: Path,
) -> None:
    """Two Prefect flow runs on one host (no pool limit any more) fetch a model at the same time:
    one builds it, the other waits for it; neither sees a half-built or replaced folder."""
    env = {**os.environ, "EVALLAB_HOME": str(tmp_path / "home"), "TQDM_DISABLE": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RESOLVE],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert len({r["sha256"] for r in results}) == 1, results
    folder = Path(results[0]["path"])
    assert (folder / "config.json").is_file() and list(folder.glob("*.safetensors"))
    assert not list(folder.parent.glob("*.building"))
