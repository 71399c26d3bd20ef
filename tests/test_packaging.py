"""What `pip install daehwa` ships: every data file below daehwa/ (templates, sentences, catalogues, model data)."""

from __future__ import annotations

import glob
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "daehwa"


def test_every_data_file_ships_in_the_wheel() -> None:
    # setuptools copies into the wheel only the package data its globs match (it expands them with glob, recursive);
    # a data file they miss works from a checkout and is gone after `pip install daehwa`.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = config["tool"]["setuptools"]["package-data"]["daehwa"]
    shipped = {Path(f).as_posix() for g in globs for f in glob.glob(g, root_dir=PACKAGE, recursive=True)}
    data = {
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    }
    assert data, "no data files found below daehwa/"
    assert sorted(data - shipped) == []
