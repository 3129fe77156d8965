"""The package's layering, held by test rather than by habit (docs/ARCHITECTURE.md).

    base (errors, _config, _lazy, _atomic, _threads, _memory, the package root)
    io  ->  dwi, preprocess  ->  models  ->  hub  ->  inference, onnx  ->  cli
    synth uses io;  train uses anything and nothing outside train/ imports it.

Every ``import`` statement is read with ``ast``, including the ones inside functions (lazy imports are still
dependencies), so a module that imports against the documented direction fails here with its file and line.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "age2hie_hub"
BASE = {"", "errors", "_config", "_lazy", "_atomic", "_threads", "_memory", "__init__"}
# Rank of each top-level part of the package: a module may import its own part, the base, and lower ranks.
# `modelcard` is the deprecated alias of hub.card: it sits above the hub, and nothing in the package imports it.
RANK = {"io": 1, "dwi": 2, "preprocess": 2, "synth": 2, "models": 3, "hub": 4, "modelcard": 5,
        "inference": 5, "onnx": 5, "cli": 6, "__main__": 6}
# Same rank, different part: only these pairs.
SAME_RANK_OK = {("inference", "onnx"), ("preprocess", "dwi"), ("__main__", "cli")}
TORCH_FREE = ("io", "dwi", "preprocess")  # pure numpy/SimpleITK layers (synth warps its grids with torch)
# The ONNX Runtime path must run where torch is not installed (export, of course, needs torch).
TORCH_FREE_MODULES = ("age2hie_hub.onnx.runtime", "age2hie_hub.onnx.providers", "age2hie_hub.onnx")
HEAVY = ("torch", "SimpleITK", "scipy", "matplotlib", "onnxruntime", "onnx", "nibabel", "huggingface_hub")


@dataclass(frozen=True)
class Edge:
    source: str  # dotted module name
    target: str  # dotted module name imported
    where: str  # file:line


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _edges() -> list[Edge]:
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            where = f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                edges += [Edge(module, alias.name, where) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                edges.append(Edge(module, target, where))
    return edges


EDGES = _edges()


def _part(module: str) -> str | None:
    """The package part a dotted name belongs to ('' for the root), or None outside the package."""
    parts = module.split(".")
    if parts[0] != "age2hie_hub":
        return None
    return parts[1] if len(parts) > 1 else ""


def test_the_scan_sees_the_whole_package():
    sources = {e.source for e in EDGES}
    assert {"age2hie_hub.io.reader", "age2hie_hub.train.loop", "age2hie_hub.cli.predict"} <= sources
    assert len(EDGES) > 200


def test_imports_point_one_way():
    wrong = []
    for e in EDGES:
        src, dst = _part(e.source), _part(e.target)
        if dst is None or dst in BASE or src == dst:
            continue
        if src == "train":
            continue  # train sits on top of everything and may use any layer
        if dst == "train":
            wrong.append(f"{e.where}: {e.source} imports {e.target} (nothing outside train/ imports train)")
        elif src == "synth":
            if dst != "io":
                wrong.append(f"{e.where}: synth may use io only, imports {e.target}")
        elif src in BASE:
            wrong.append(f"{e.where}: base module {e.source} imports {e.target}")
        elif dst == "synth" and src != "cli":
            wrong.append(f"{e.where}: {e.source} imports {e.target} (only the CLI uses synth)")
        elif dst != "synth" and (RANK.get(dst, 99) > RANK.get(src, -1)
                                 or (RANK.get(dst, 99) == RANK.get(src) and (src, dst) not in SAME_RANK_OK)):
            wrong.append(f"{e.where}: {e.source} ({src}) imports {e.target} ({dst}) against the layering")
    assert not wrong, "\n".join(wrong)


def test_nothing_imports_the_deprecated_modelcard_alias():
    """age2hie_hub.modelcard only forwards to hub.card for users' old imports; the package itself never uses it."""
    users = [f"{e.where}: {e.source}" for e in EDGES if e.target.startswith("age2hie_hub.modelcard")]
    assert not users, "\n".join(users)
    assert any(e.source == "age2hie_hub.modelcard" for e in EDGES)  # the scan does see the alias


def test_lower_layers_and_the_onnx_path_import_no_torch():
    wrong = [f"{e.where}: {e.source} imports {e.target}" for e in EDGES
             if e.target.split(".")[0] == "torch"
             and (_part(e.source) in TORCH_FREE or e.source in TORCH_FREE_MODULES)]
    # ... nor a torch model, directly or through a module that builds one.
    wrong += [f"{e.where}: {e.source} imports {e.target}" for e in EDGES
              if _part(e.source) in TORCH_FREE and _part(e.target) in {"models", "hub", "inference", "train"}]
    assert not wrong, "\n".join(wrong)


def test_the_checker_catches_a_violation(tmp_path, monkeypatch):
    """Negative control: a module of io importing the hub is reported."""
    global EDGES
    bad = Edge("age2hie_hub.io.reader", "age2hie_hub.hub.resolve", "age2hie_hub/io/reader.py:1")
    torchy = Edge("age2hie_hub.preprocess.crop", "torch.nn", "age2hie_hub/preprocess/crop.py:1")
    monkeypatch.setattr(sys.modules[__name__], "EDGES", [*EDGES, bad, torchy])
    with pytest.raises(AssertionError, match="io/reader.py:1"):
        test_imports_point_one_way()
    with pytest.raises(AssertionError, match="preprocess/crop.py:1"):
        test_lower_layers_and_the_onnx_path_import_no_torch()


def _console_scripts() -> list[str]:
    setup = (PACKAGE.parent / "setup.cfg").read_text(encoding="utf-8")
    section = setup.split("console_scripts =", 1)[1].split("\n[", 1)[0]
    return [line.split("=", 1)[1].strip() for line in section.splitlines() if "=" in line]


@pytest.mark.parametrize("entry", _console_scripts())
def test_cli_help_imports_no_heavy_library(entry):
    module, func = entry.split(":")
    code = (
        "import sys, json, contextlib, io\n"
        f"import {module} as m\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    try:\n"
        f"        code = m.{func}(['--help'])\n"
        "    except SystemExit as e:\n"
        "        code = e.code\n"
        f"heavy = [h for h in {HEAVY!r} if h in sys.modules]\n"
        "print(json.dumps({'code': code, 'heavy': heavy, 'help': buf.getvalue()[:200]}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["code"] == 0 and "usage" in result["help"].lower(), result
    assert result["heavy"] == [], f"{entry} --help imported {result['heavy']}"
