import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_current():
    spec = importlib.util.spec_from_file_location("make_cli_reference", ROOT / "docs" / "make_cli_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert (ROOT / "docs" / "cli.md").read_text() == mod.render(), "run: python docs/make_cli_reference.py"


@pytest.mark.integration
def test_console_script_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "saex", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for cmd in ("demo", "fetch", "harvest", "store"):
        assert cmd in out.stdout


def test_no_pickle_loading_in_the_code():
    for path in list((ROOT / "sae").rglob("*.py")) + list((ROOT / "training").rglob("*.py")):
        text = path.read_text()
        assert "pickle" not in text.replace("allow_pickle=False", "").replace("no pickle", ""), path
        assert "torch.load(" not in text or "weights_only=True" in text, path


def test_reliability_doc_names_only_existing_tests():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    doc = (root / "docs" / "reliability.md").read_text()
    named = re.findall(r"`(test_\w+\.py)::(test_\w+)`", doc)
    assert len(named) > 10
    for f, t in named:
        assert f"def {t}(" in (root / "tests" / f).read_text(), f"{f}::{t}"


def test_every_source_path_the_docs_and_code_cite_exists():
    """A file moved into a sub-package leaves no reader sent to where it was."""
    import re

    texts = [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    packages = ("sae", "saex", "training", "explorer", "bench", "tests")
    texts += [p for pkg in packages for p in (ROOT / pkg).rglob("*.py")]
    cited = {(p.relative_to(ROOT).as_posix(), ref) for p in texts
             for ref in re.findall(r"\b(?:sae|saex|training|explorer|bench)/[\w/]+\.py\b", p.read_text())}
    assert len(cited) > 20
    assert sorted((where, ref) for where, ref in cited if not (ROOT / ref).exists()) == []
