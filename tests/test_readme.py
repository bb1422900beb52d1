"""The README's example runs as written, and its commands are the ones CI runs."""

import re
from pathlib import Path

import ntkit

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"


def test_readme_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python example"
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md block {i}", "exec"), {})
    out = capsys.readouterr().out
    assert "torch.Size([100, 100]) torch.Size([100, 1]) torch.Size([10, 1])" in out


def test_readme_commands_match_ci():
    text = README.read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -c constraints.txt -e ".[dev]"' in text
    assert '-c constraints.txt -e ".[dev]"' in ci
    assert "python -m pytest" in text and "-m pytest" in ci


def test_readme_is_a_landing_page():
    assert len(README.read_text().splitlines()) <= 150


def test_version_has_one_source():
    # pyproject.toml reads the version from ntkit/_version.py; nothing else spells it.
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject
    assert 'version = {attr = "ntkit._version.__version__"}' in pyproject
    assert re.search(r'^version\s*=\s*"', pyproject, re.M) is None
    assert re.fullmatch(r"\d+\.\d+\.\d+", ntkit.__version__)


def test_dir_ntkit_lists_public_names_only():
    names = dir(ntkit)
    for stray in ("annotations", "importlib", "_LAZY"):
        assert stray not in names
    assert set(ntkit.__all__) <= set(names)
