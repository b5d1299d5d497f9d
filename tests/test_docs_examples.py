"""The command examples of the README and the docs run as written.

The ```bash blocks of each page below run in order, in a fresh working folder per page that
looks like a checkout (``sample_data/`` beside it). Pages that say "after `make demo`" get
``demo_output/model/model.safetensors``: a model trained by ``geopsp train`` (the shared
fixture), standing in for the demo's. ``docs/evaluate.md`` runs its own examples in
tests/test_evaluate_cli.py. Blocks fenced as ```text show commands that need other data,
a GPU or several machines.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    "README.md", "docs/export-chips.md", "docs/train.md", "docs/classify.md", "docs/info.md",
    "docs/vectorize.md", "docs/export-model.md",
]  # fmt: skip
BLOCK = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)


def bash_blocks(page: str) -> list[str]:
    return BLOCK.findall((ROOT / page).read_text(encoding="utf-8"))


def test_every_page_has_runnable_examples():
    for page in PAGES[1:]:
        assert bash_blocks(page), f"{page} has no ```bash example"


def make_checkout(folder: Path, model: Path) -> Path:
    folder.mkdir()
    (folder / "sample_data").symlink_to(ROOT / "sample_data")
    model_dir = folder / "demo_output" / "model"
    model_dir.mkdir(parents=True)
    shutil.copy(model, model_dir / "model.safetensors")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_docs_examples_run_as_written(page, tmp_path, everest_model):
    work = make_checkout(tmp_path / "checkout", everest_model)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["OMP_NUM_THREADS"] = "1"  # several processes (workers, torchrun ranks) share 2 cores
    ran = 0
    for i, block in enumerate(bash_blocks(page)):
        if "make " in block:  # the quick start installs; CI runs `make test` itself
            continue
        r = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, f"{page} block {i + 1} failed:\n{block}\n{r.stdout}\n{r.stderr}"
        ran += 1
    assert ran > 0
    # The examples made what they say they make.
    made = {
        "README.md": ["quick_glaciers.tif", "quick_glaciers.gpkg"],
        "docs/export-chips.md": ["atlanta_chips/chips.gpkg", "vegas_chips/classes.json"],
        "docs/train.md": ["everest_run/model.safetensors", "run_cpu2/model.safetensors"],
        "docs/classify.md": [
            "classes.tif",
            "classes.qml",
            "classes_cog.tif",
            "classes_2ranks.tif",
            "classes_adapted.tif",
        ],
        "docs/info.md": ["model.json"],
        "docs/vectorize.md": ["glaciers.gpkg", "glaciers.parquet"],
        "docs/export-model.md": ["glaciers.dlpk", "glaciers.onnx", "catalog/glaciers.json"],
    }[page]
    for rel in made:
        assert (work / rel).exists(), f"{page}: {rel} was not written"


def _geopsp_lines(text: str) -> list[str]:
    """The ``geopsp`` command lines of a shell text, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in joined.splitlines() if line.strip().startswith("geopsp ")]


def _options(line: str) -> set[str]:
    """A command's subcommand with each option name, and with its value where that value is a
    number or a duration (``--chip-size 128``, ``--time-limit 4m``); paths differ by design."""
    words = line.split()
    out = {words[1]}
    for flag, value in zip(words, [*words[1:], ""], strict=True):
        if flag.startswith("--"):
            out.add(flag)
            if re.fullmatch(r"[0-9.]+[smh]?|d4|none", value):
                out.add(f"{flag} {value}")
    return out


def test_index_shows_the_demo_as_it_runs():
    """docs/index.md shows the demo's commands in short; each shown option is the script's."""
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    shown = _geopsp_lines(
        index.split("`make demo` runs", 1)[1].split("```text\n", 1)[1].split("```")[0]
    )
    demo = _geopsp_lines((ROOT / "docs" / "examples" / "demo.sh").read_text(encoding="utf-8"))
    assert len(shown) == 4
    for line in shown:
        ours = _options(line)
        runs = [_options(d) for d in demo if d.split()[1] == line.split()[1]]
        assert any(ours <= r for r in runs), f"docs/index.md: {line!r} is not how demo.sh runs it"
