"""No import circle in the packages, counting the imports inside functions (grimp, the graph
import-linter checks its contracts on)."""

from __future__ import annotations

import grimp


def circles(graph: grimp.ImportGraph) -> list[set[str]]:
    """The import circles: sets of two or more modules that each reach all the others."""
    found: list[set[str]] = []
    for module in sorted(graph.modules):
        if any(module in circle for circle in found):
            continue
        # What `module` imports, directly or not, and what imports it: both at once is a circle.
        both = graph.find_upstream_modules(module) & graph.find_downstream_modules(module)
        if both:
            found.append({module, *both})
    return found


def test_no_import_circle():
    graph = grimp.build_graph("webapp", "jobs", "observability")

    found = [sorted(circle) for circle in circles(graph)]

    assert found == [], f"import circles: {found}"


def test_the_circle_finder_finds_a_circle():
    graph = grimp.ImportGraph()
    for module in ("a", "a.b", "a.c", "a.d"):
        graph.add_module(module)
    graph.add_import(importer="a.b", imported="a.c")
    graph.add_import(importer="a.c", imported="a.b")
    graph.add_import(importer="a.c", imported="a.d")

    assert circles(graph) == [{"a.b", "a.c"}]
