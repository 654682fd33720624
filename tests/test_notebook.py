"""The Colab notebook executes top to bottom on CPU: its code cells, extracted from the JSON, in order."""

import json
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "colab_tpu.ipynb"


def code_cells() -> list[str]:
    notebook = json.loads(NOTEBOOK.read_text())
    assert notebook["nbformat"] == 4 and notebook["metadata"]["accelerator"] == "TPU"
    return ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]


def test_notebook_is_stored_without_outputs():
    notebook = json.loads(NOTEBOOK.read_text())
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_on_cpu(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the notebook writes jaxdl_out/ into the working folder
    # Every example already runs in tests/test_examples.py; here one is enough to exercise the cells.
    monkeypatch.setenv("JAXDL_NOTEBOOK_EXAMPLES", "mnist_data_parallel")
    namespace = {"__name__": "__main__"}
    for index, source in enumerate(code_cells()):
        exec(compile(source, f"{NOTEBOOK.name}[code cell {index}]", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "skipping the install" in printed  # jaxdl is importable here: the install cell is a no-op
    assert "no accelerator: examples run at smoke size" in printed
    assert namespace["ON_ACCELERATOR"] is False
    assert list(namespace["results"]) == ["mnist_data_parallel"]
    assert 0.0 <= namespace["results"]["mnist_data_parallel"]["test_accuracy"] <= 1.0
    assert (tmp_path / "jaxdl_out" / "mnist_data_parallel" / "mnist_data_parallel.json").exists()
