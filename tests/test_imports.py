"""The package's import graph has no cycle, counting imports inside functions too (layers import downward)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _graph() -> dict[str, set[str]]:
    mods = {}
    for f in (ROOT / "amed").rglob("*.py"):
        name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = f
    graph = {m: set() for m in mods}
    for m, f in mods.items():
        base = m if f.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                parts = base.split(".")
                target = ".".join(parts[:len(parts) - node.level + 1] + [node.module] if node.module else
                                  parts[:len(parts) - node.level + 1]) if node.level else (node.module or "")
                subs = [f"{target}.{a.name}" for a in node.names]
                # `from . import _tvshim` imports a submodule, not the package's own __init__ (always loaded first)
                names = subs + ([target] if not all(n in mods for n in subs) else [])
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            graph[m] |= {n for n in names if n in mods and n != m}
    return graph


def _cycle(graph):
    state = {}

    def visit(v, path):
        state[v] = 1
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state and (found := visit(w, path + [w])):
                return found
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v, [v])):
            return found
    return None


def test_no_import_cycle_in_the_package():
    graph = _graph()
    assert "amed.calls" in graph["amed.plugin"] and "amed.sampling" not in graph["amed.plugin"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_model_networks_and_preconditioning_sit_below_the_adapters():
    graph = _graph()
    assert graph["amed.models.edm_networks"] <= {"amed.errors"}
    assert graph["amed.models.precond"] == set()
    for adapter in ("amed.models.edm", "amed.models.cm", "amed.models.embedded"):
        assert "amed.models.precond" in graph[adapter], adapter
    assert "amed.models.edm_networks" in graph["amed.models.edm"]


def test_the_checker_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_shared_file_helpers_and_figure_modules_sit_low():
    graph = _graph()
    assert graph["amed._io"] <= {"amed.errors"}  # below every reader and writer (CSV tables included)
    for m in ("amed.plots", "amed.tables"):  # amed.analysis re-exports them, so they never import it
        assert "amed.analysis" not in graph[m] and "amed.sampling" not in graph[m]


def test_shared_utilities_and_the_metrics_sit_below_the_models():
    """Downloads, files and the metrics import nothing from amed.models; the model families build on them."""
    graph = _graph()
    for m in ("amed._io", "amed.errors", "amed.download", "amed.frechet", "amed.inception", "amed.coco", "amed.features"):
        assert not {n for n in graph[m] if n.startswith("amed.models")}, (m, graph[m])
    assert graph["amed.models.download"] == {"amed.download"}  # the old import path, a re-export


def test_one_loop_below_every_driver():
    """amed.driver's integrate is the one trajectory loop: it sits on the call layer, and the samplers, training
    and the analysis build on it."""
    graph = _graph()
    assert graph["amed.driver"] <= {"amed.calls", "amed.errors"}
    for m in ("amed.sampling", "amed.plugin", "amed.training", "amed.analysis"):
        assert "amed.driver" in graph[m], m
