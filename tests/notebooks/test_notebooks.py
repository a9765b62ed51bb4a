"""Notebooks: stored without outputs, paired with their py:percent copies, and run top to bottom."""

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def _ids(paths):
    return [p.stem for p in paths]


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no .ipynb files"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_stripped_and_paired(path):
    import jupytext
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs stored"
    pair = path.with_suffix(".py")
    assert pair.exists(), f"{path.name} has no py:percent copy"
    text = jupytext.read(pair)
    assert [c.source for c in text.cells] == [c.source for c in nb.cells], (
        f"{path.name} and {pair.name} differ; run `jupytext --sync {pair}`")
    sources = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    imports = [line.split()[1].split(".")[0] for line in sources.splitlines()
               if line.startswith(("import ", "from "))]
    assert set(imports) <= {"drtk"}, f"{path.name} imports {set(imports) - {'drtk'}}: notebooks import only drtk"
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1


@pytest.mark.embedded
@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs(path, tmp_path):
    import nbformat

    _execute(nbformat.read(path, as_version=4), tmp_path)


def _execute(nb, folder):
    """Run ``nb`` in ``folder``; fails on any cell's error. Returns the notebook with its outputs."""
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors, errors
    return nb


@pytest.mark.embedded
@pytest.mark.notebook
def test_before_after_notebook_attacks_with_the_direction_it_is_given(embedded, tmp_path):
    """``DIRECTION`` set: notebook 04 loads that direction (a demo's ``DIR/direction``; here a saved random one at
    layer 5, position -2) and uses it, rather than finding one of its own."""
    import nbformat
    import torch

    from drtk import Direction

    saved = Direction(vector=torch.randn(embedded.d_model, generator=torch.Generator().manual_seed(0)), kind="single",
                      model_id=embedded.model_id, n_layers=embedded.n_layers, d_model=embedded.d_model, layer=5,
                      position=-2, site="blocks.5.hook_resid_pre").save(tmp_path / "direction")
    nb = nbformat.read(next(p for p in NOTEBOOKS if p.stem == "04_before_after"), as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert "DIRECTION = None" in params.source
    params.source = params.source.replace("DIRECTION = None", f"DIRECTION = {str(saved.parent)!r}")
    shown = [o["data"]["text/plain"] for c in _execute(nb, tmp_path).cells if c.cell_type == "code"
             for o in c.outputs if o.get("output_type") == "execute_result" and "text/plain" in o.get("data", {})]
    assert "(5, -2)" in shown
