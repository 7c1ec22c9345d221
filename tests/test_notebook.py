"""notebooks/generate_sequences.ipynb runs headless on CPU, every cell without error."""
from __future__ import annotations

import pytest

from conftest import REPO, SHARED


@pytest.mark.slow
def test_generate_sequences_notebook_runs(shared_data, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    path = REPO / "notebooks" / "generate_sequences.ipynb"
    notebook = nbformat.read(path, as_version=4)
    monkeypatch.setenv("DNADIFF_SHARED", str(SHARED))  # the kernel inherits the environment
    monkeypatch.setenv("MPLBACKEND", "Agg")
    client = nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError naming the failing cell
    outputs = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "identity to the real middle" in outputs and "kmer_js_mean" in outputs
    # the public API end to end: pretrain, score, embed + scikit-learn, fine-tune + a saved classifier
    assert "steps in" in outputs and "bits/base (median stderr" in outputs
    assert "same vector for the reverse complement: True" in outputs and "held-out accuracy: embeddings" in outputs
    assert "accuracy" in outputs and "P(enhancer)" in outputs
    assert "frechet" in outputs and "kmer3_pearson" in outputs and "real floor" in outputs
    # guided design judged by an oracle trained on the other half of the data
    assert "oracle P(promoter)" in outputs and "real held-out promoters: oracle P(promoter)" in outputs
