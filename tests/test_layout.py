"""The layout's promises, checked on the sources: data flows one way through the pipeline
stages, no import runs back up the layers or in a cycle, store readers never pull in model
code, and the public API in `sae.__all__` resolves while `import sae` stays cheap."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sae", "saex", "training", "explorer")
# Within sae/: a stage may import its own package and the stages before it.
SAE_STAGE = {"sae.errors": 0, "sae.fsutil": 1, "sae.precision": 1.5, "sae.statistics": 1.5, "sae.report": 1.5,
             "sae.options": 1.5, "sae.data": 2,
             "sae.runs": 3, "sae.index": 4, "sae.lookahead": 5, "sae.labels": 5}
# Who may import whom at the top level (the command line sits on top of everything).
MAY_IMPORT = {"sae": {"sae"}, "training": {"sae", "training"}, "explorer": {"sae", "explorer"},
              "saex": {"sae", "training", "explorer", "saex"}}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every first-party module `path` imports, at any depth in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from sae.data import store`
    return {m for m in found if m.split(".")[0] in PACKAGES}


def _graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {_module_name(p): p for p in files}
    graph = {}
    for name, path in modules.items():
        # keep only names that are modules (drop `from sae.x import some_function`)
        graph[name] = {m for m in _imports(path) if m in modules and m != name}
    return graph


def _stage(module: str) -> str:
    return next(s for s in sorted(SAE_STAGE, key=len, reverse=True) if module == s or module.startswith(s + "."))


def test_top_level_packages_import_only_downwards():
    wrong = [(a, b) for a, deps in _graph().items() for b in deps
             if b.split(".")[0] not in MAY_IMPORT[a.split(".")[0]]]
    assert wrong == []


def test_sae_stages_import_only_earlier_stages():
    wrong = []
    for a, deps in _graph().items():
        if not a.startswith("sae.") or a == "sae":
            continue
        for b in deps:
            if b == "sae":
                continue
            sa, sb = _stage(a), _stage(b)
            if SAE_STAGE[sb] > SAE_STAGE[sa] or (SAE_STAGE[sb] == SAE_STAGE[sa] and sa != sb):
                wrong.append((a, b))
    assert wrong == []


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt == "sae":  # the lazy public API imports nothing at import time
                continue
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_store_readers_never_import_model_or_corpus_code():
    graph = _graph()
    assert graph["sae.data.store"] <= {"sae.errors", "sae.fsutil"}


def test_the_library_has_no_streamlit_or_argparse():
    offenders = []
    for path in (ROOT / "sae").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [(path.name, n) for n in names if n.split(".")[0] in ("streamlit", "argparse")]
    assert offenders == []


@pytest.mark.integration
def test_public_api_resolves_and_import_is_cheap():
    import sae

    assert sae.__all__ and all(getattr(sae, name) is not None for name in sae.__all__)
    with pytest.raises(AttributeError):
        getattr(sae, "no_such_name")
    code = "import sys, sae; print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.integration
def test_python_m_saex_is_the_console_script():
    from saex import cli

    out = subprocess.run([sys.executable, "-m", "saex", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0
    assert out.stdout == cli.build_parser().format_help()


def test_every_first_party_import_resolves():
    """Imports inside functions run only on the path that needs them (a bench's planted
    direction, a page's rare branch): check each names a module and attribute that exist."""
    import importlib

    missing = []
    files = [p for pkg in PACKAGES + ("bench",) for p in (ROOT / pkg).rglob("*.py")]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                    and node.module.split(".")[0] in PACKAGES):
                continue
            try:
                module = importlib.import_module(node.module)
            except ImportError as e:
                missing.append((path.relative_to(ROOT).as_posix(), node.module, str(e)))
                continue
            for alias in node.names:
                if not hasattr(module, alias.name):
                    try:
                        importlib.import_module(f"{node.module}.{alias.name}")
                    except ImportError:
                        missing.append((path.relative_to(ROOT).as_posix(), node.module, alias.name))
    assert missing == []
