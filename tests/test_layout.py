"""The rooms of appliance/ and what each may import (docs/architecture.md draws the same table), read from the
source, lazy imports inside functions included; and the runtime, imported as `scanside serve` imports it, loads
none of the development tools, training code or torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import appliance

ROOT = Path(appliance.__file__).parent
FOUNDATION = {"appliance", "handovers", "config", "fileio", "logsafe"}  # anyone may use these

# room -> the other rooms it may import, beyond FOUNDATION. The data flow reads top to bottom.
ALLOWED: dict[str, set[str]] = {
    "handovers": set(),
    "config": set(),
    "fileio": set(),
    "logsafe": set(),
    "metrics": set(),
    "store": set(),
    "assembly": set(),
    "commitment": set(),  # Storage Commitment datasets, made and read: the receiver's SCP, the PACS destination's SCU
    "ingest": {"assembly", "commitment", "metrics", "store"},
    "preprocess": set(),
    "quality": {"preprocess"},
    "bundle": {"preprocess"},
    "lexicon": set(),
    "negation": set(),
    "text": {"lexicon", "negation"},
    "truth": set(),
    "evidence": {"bundle", "metrics"},
    "validation": {"bundle", "evidence", "store"},
    "inference": {"bundle", "metrics"},
    "scoring": {"bundle"},
    "prompts": {"bundle", "scoring", "text"},
    "export": {"commitment", "metrics", "store"},
    "serve": {"api", "bundle", "inference", "store"},
    "pipeline": {"assembly", "bundle", "commitment", "evidence", "export", "inference", "ingest", "metrics",
                 "preprocess", "prompts", "quality", "scoring", "serve", "store", "truth"},
    "service": {"pipeline"},
    "display": {"api", "serve"},  # scanside display: a gRPC client of the appliance serving the console's page
}
RUNTIME_NEVER = ("appliance.dev", "training", "torch")


def room_of(module: str) -> str:
    parts = module.split(".")
    return "appliance" if len(parts) == 1 else parts[1]


def module_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")


def imports_by_room() -> dict[str, dict[str, set[str]]]:
    """room -> imported module -> the files importing it."""
    found: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent)
        if rel.parts[1] == "api":  # generated gRPC code
            continue
        module = module_of(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                found[room_of(module)][name].add(str(rel))
    return found


def test_every_room_is_in_the_table():
    rooms = {room_of(module_of(p)) for p in ROOT.rglob("*.py")}
    assert rooms - set(ALLOWED) - {"appliance", "api", "cli", "dev", "__main__"} == set()


def test_each_room_imports_only_what_it_may():
    wrong = []
    for room, imported in imports_by_room().items():
        if room not in ALLOWED:  # cli, dev and __main__ sit on top and may use anything
            continue
        for name, files in imported.items():
            if name.split(".")[0] != "appliance":
                continue
            other = room_of(name)
            if other != room and other not in FOUNDATION | ALLOWED[room]:
                wrong.append(f"{room} imports {name} ({', '.join(sorted(files))})")
    assert wrong == []


def test_no_runtime_room_imports_development_tools_even_lazily():
    wrong = [f"{room} imports {name} ({', '.join(sorted(files))})"
             for room, imported in imports_by_room().items() if room in ALLOWED
             for name, files in imported.items() if name.startswith(RUNTIME_NEVER)]
    assert wrong == []


def test_the_serving_process_loads_no_development_tools():
    code = (
        "import sys\n"
        "import appliance.cli, appliance.service, appliance.pipeline.build, appliance.pipeline.recovery\n"
        "import appliance.export.outbox, appliance.export.destinations, appliance.export.sr\n"
        "import appliance.serve.server, appliance.serve.client, appliance.prompts\n"
        f"bad = sorted(m for m in sys.modules if m.startswith({RUNTIME_NEVER!r}))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
