"""docs/python-api.md runs as written: its ``python`` blocks, in order, in a fresh folder, on tiny phantoms."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"


def doc_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_doc_has_examples_for_every_public_name():
    import petctfm

    code = "\n".join(doc_blocks())
    for name in petctfm.__all__:
        if name != "__version__":
            assert f"petctfm.{name}" in code, f"docs/python-api.md has no example of petctfm.{name}"


def test_import_is_lazy():
    import subprocess

    out = subprocess.run([sys.executable, "-c", "import sys, petctfm; print('torch' in sys.modules, "
                          "'monai' in sys.modules, 'SimpleITK' in sys.modules)"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "False"]


def test_unknown_name_is_an_attribute_error():
    import petctfm

    with pytest.raises(AttributeError, match="no attribute 'pretrian'"):
        petctfm.pretrian  # noqa: B018


@pytest.mark.slow
def test_python_api_examples_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    scope: dict = {"__name__": "__doc__"}
    for i, block in enumerate(doc_blocks()):
        exec(compile(block, f"{DOC.name}[block {i}]", "exec"), scope)  # noqa: S102
    out = capsys.readouterr().out
    assert "harmonized, 0 failed" in out
    assert "pretrained 2 steps, stopped by max_steps" in out
    # the in-memory mask is on the input PET grid and equals what was saved and evaluated
    pet, mask = scope["pet"], scope["mask"]
    assert mask.shape == pet.shape and mask.dtype == np.uint8
    saved = np.asarray(scope["nib"].load(f"pred/{scope['case'].name}.nii.gz").dataobj)
    assert np.array_equal(saved, mask)
    assert len(scope["result"]["cases"]) == len(scope["rows"]) == 6
    assert (tmp_path / "case.png").stat().st_size > 10_000
    assert (tmp_path / "runs/seg/config.yaml").is_file() and (tmp_path / "runs/mae/summary.json").is_file()
    # the PromptSession section: one object left after the undo, its mask on the PET grid
    labels = scope["labels"]
    assert labels.shape == scope["suv"].shape and set(np.unique(labels).tolist()) <= {0, 1}
    assert [r["name"] for r in scope["table"]] == ["lesion A"] and "1 object;" in out
