"""notebooks/walkthrough.ipynb runs top to bottom against the test stores (so it cannot rot),
and is kept in git without outputs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import nbformat
import pytest
from nbclient import NotebookClient

from sources.stores.clients import Stores

if TYPE_CHECKING:
    from feast import FeatureStore

ROOT = Path(__file__).parents[2]
NOTEBOOK = ROOT / "notebooks" / "walkthrough.ipynb"


def test_the_walkthrough_is_kept_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_the_walkthrough_runs_top_to_bottom(
    tmp_path: Path, stores: Stores, feature_store: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoints = stores.endpoints
    # the kernel inherits this environment: the session's stores, a folder for its models, this checkout
    for name, value in {"MARQUEE_PG_DSN": endpoints.pg_dsn, "MARQUEE_MONGO_URI": endpoints.mongo_uri,
                        "MARQUEE_GRAPH_URI": endpoints.graph_uri, "MARQUEE_WALKTHROUGH_DIR": str(tmp_path),
                        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                        "JUPYTER_PLATFORM_DIRS": "1"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MARQUEE_API_URL", raising=False)  # the API in-process
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on the first failing cell
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "rows x" in text and "engagement net, valid RMSE" in text, text
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the evaluation plot
    assert (tmp_path / "reports" / "evaluation_time_pop-two_tower.md").is_file()
    assert (tmp_path / "models" / "time" / "two_tower.pt").is_file()
