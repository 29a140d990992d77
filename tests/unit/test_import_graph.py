"""No import circle in the packages, counting the imports inside functions (grimp, the graph
import-linter checks its contracts on), but for the one the composition root still closes."""

from __future__ import annotations

import grimp

# The application factory registers the jobs CLI and the admin-jobs blueprint, and the worker's
# runtime builds the application: webapp -> jobs -> webapp. To be broken by giving the
# composition root a module of its own (docs/architecture.md, "Import rules").
ROOT_CIRCLE = {
    "webapp",
    "webapp.cli",
    "webapp.routes",
    "webapp.admin_jobs.routes",
    "jobs.cli",
    "jobs.dead_letters",
    "jobs.dispatcher",
    "jobs.recovery",
    "jobs.runtime",
    "jobs.supervisor",
    "jobs.tasks",
    "jobs.worker",
}


def circles(graph: grimp.ImportGraph) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if child < len(edges[node]):
                work.append((node, child + 1))
                target = edges[node][child]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            for target in edges[node]:
                if target in on_stack:
                    low[node] = min(low[node], low[target])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_no_import_circle_but_the_composition_roots():
    graph = grimp.build_graph("webapp", "jobs", "observability")

    outside = [sorted(c) for c in circles(graph) if not c <= ROOT_CIRCLE]

    assert outside == [], f"import circles: {outside}"


def test_the_circle_finder_finds_a_circle():
    graph = grimp.ImportGraph()
    for module in ("a", "a.b", "a.c", "a.d"):
        graph.add_module(module)
    graph.add_import(importer="a.b", imported="a.c")
    graph.add_import(importer="a.c", imported="a.b")
    graph.add_import(importer="a.c", imported="a.d")

    assert circles(graph) == [{"a.b", "a.c"}]
