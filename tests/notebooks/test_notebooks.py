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
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
