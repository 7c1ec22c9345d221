"""Design rules of the package layout, checked on the source: no import cycle anywhere in dnadiff/
(imports inside functions count: they are dependencies too). That the diffusion core imports nothing from
the rest of dnadiff is tests/test_core_training.py's test."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dnadiff"


def module_files() -> dict[str, tuple[Path, bool]]:
    """dotted module name -> (file, is_package)."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the dnadiff modules it imports (``from pkg import sub`` points at the submodule)."""
    modules = module_files()

    def owner(name: str) -> str | None:  # the longest dnadiff module that ``name`` names or lies in
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, (path, is_pkg) in modules.items():
        here = name if is_pkg else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps |= {owner(a.name) for a in node.names if a.name.split(".")[0] == "dnadiff"}
            elif isinstance(node, ast.ImportFrom):
                base = here
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                target = (base + ("." + node.module if node.module else "")) if node.level else node.module
                if target.split(".")[0] != "dnadiff":
                    continue
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    deps.add(sub if sub in modules else owner(target))
        graph[name] = deps - {name, None}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cycle_finder_finds_a_cycle_and_none_in_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_graph_sees_relative_lazy_and_submodule_imports():
    graph = import_graph()
    assert "dnadiff.diffusion.schedules" in graph["dnadiff.diffusion.masked"]  # from .schedules import ...
    assert "dnadiff.diffusion.sampling" in graph["dnadiff.diffusion.process"]  # lazy, inside ProcessBase.sample
    assert "dnadiff.models.config" in graph["dnadiff.models"]  # absolute, in a package __init__


def test_no_import_cycle_in_dnadiff():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_bad_diffusion_settings_are_a_value_error_in_the_core_and_a_user_error_outside():
    from dnadiff.diffusion import GenMD4, MaskedDiffusion, build_diffusion
    from dnadiff.errors import UserError
    from dnadiff.checkpoints.format import build_process

    with pytest.raises(ValueError, match="bad diffusion settings"):
        build_diffusion({"vocab_size": 4, "schedule": "nope"})
    with pytest.raises(UserError, match="check the config's diffusion section"):
        build_process({"vocab_size": 4, "schedule": "polynomial", "exponent_typo": 2})
    process = build_diffusion({"vocab_size": 4, "schedule": "linear", "num_steps": 8})
    assert isinstance(process, MaskedDiffusion) and process.num_steps == 8 and process.mask_id == 4
    genmd4 = build_diffusion({"vocab_size": 4, "schedule": "genmd4", "init_w": 2.0})
    assert isinstance(genmd4, GenMD4)
    assert genmd4.w.detach().tolist() == pytest.approx([2.0] * 4)


#: The layer order of README's "Layout" section, bottom first: a module may import its own package and
#: anything in its layer or below (a layer's members import each other only without a cycle, checked
#: above), never a layer above it. Every top-level module or package of dnadiff must be placed here.
LAYERS = [
    {"version", "errors", "alphabet", "atomic", "paths", "devices", "logs", "plots", "provenance", "keys", "seeds", "migrations"},
    {"diffusion", "ops"},
    {"rc", "progress"},
    {"data"},
    {"models", "eval", "config"},
    {"checkpoints"},
    {"training"},
    {"finetuning", "scoring"},
    {"design"},
    {"generate", "evaluation"},
    {"api", ""},  # "" is dnadiff/__init__.py, the public API (imported lazily)
    {"commands", "cli", "demo"},
]


def top_level(module: str) -> str:
    """'dnadiff.training.pretrain' -> 'training'; 'dnadiff' -> ''."""
    return module.split(".")[1] if "." in module else ""


def layer_violations(graph: dict[str, set[str]], layers: list[set[str]]) -> list[str]:
    rank = {name: i for i, layer in enumerate(layers) for name in layer}
    bad = []
    for module, deps in sorted(graph.items()):
        here = top_level(module)
        for dep in sorted(deps):
            there = top_level(dep)
            if there != here and rank[there] > rank[here]:
                bad.append(f"{module} imports {dep} (layer {rank[there]} above {rank[here]})")
    return bad


def test_layer_checker_flags_an_upward_import():
    graph = {"dnadiff.models.caduceus": {"dnadiff.training.diffusion_module"}, "dnadiff.training.diffusion_module": {"dnadiff.models"}}
    assert layer_violations(graph, LAYERS) == [
        "dnadiff.models.caduceus imports dnadiff.training.diffusion_module (layer 6 above 4)"]


def test_every_package_has_a_layer_and_no_import_runs_up():
    graph = import_graph()
    placed = set().union(*LAYERS)
    assert {top_level(m) for m in graph} <= placed, f"unplaced: {sorted({top_level(m) for m in graph} - placed)}"
    assert layer_violations(graph, LAYERS) == []
