#!/usr/bin/env python3
"""Draws the library's module graph from its paths (`use crate::..`, `use super::..` and
inline `crate::a::b` / `super::a` paths) and lists cycles between modules.

    python3 scripts/module-graph.py            # check: exit 1 and list the cycles, if any
    python3 scripts/module-graph.py --dot      # the graph in Graphviz's dot language

A module is a file under src/ (`db/snapshot.rs` is `db::snapshot`, `db/integrity/mod.rs`
is `db::integrity`). An edge A -> B means A names something in B. Edges between a module
and its own ancestors are left out: a parent declares its children and re-exports their
items, and children use their parent's; that is nesting, not a cycle. Every other pair
that reaches each other is a cycle (ARCHITECTURE.md, "Layers": the arrows never point
up). Names brought in by a glob (`use super::*`) are not followed.
"""
import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def module_of(path: Path) -> tuple:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts.pop()
    return tuple(parts)


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def main() -> int:
    modules = {module_of(p): p for p in SRC.rglob("*.rs") if "bin" not in p.parts}
    known = set(modules)

    def longest_known(prefix: tuple) -> tuple:
        for n in range(len(prefix), -1, -1):
            if prefix[:n] in known:
                return prefix[:n]
        return ()

    edges = {m: set() for m in known}
    for m, path in modules.items():
        text = strip_comments(path.read_text())
        # `use a::{b, c::d}` brace groups: expand one level, enough for this code base.
        targets = []
        for base, group in re.findall(r"\b((?:crate|super)(?:::\w+)*)::\{([^}]*)\}", text):
            for item in group.split(","):
                item = item.strip().split(" as ")[0]
                if item and item not in ("self", "*"):
                    targets.append(base + "::" + item)
                elif item == "self":
                    targets.append(base)
        targets += re.findall(r"\b((?:crate|super)(?:::\w+)+)", text)
        # A file that is a module's mod.rs is that module; `super` is its parent.
        is_dir_module = path.name == "mod.rs"
        for t in targets:
            parts = t.split("::")
            if parts[0] == "crate":
                full = tuple(parts[1:])
            else:
                base = list(m)
                while parts and parts[0] == "super":
                    parts.pop(0)
                    base = base[:-1] if base else base
                full = tuple(base) + tuple(parts)
            target = longest_known(full)
            if target == m or target == () or m[: len(target)] == target or target[: len(m)] == m:
                continue  # itself, the crate root, an ancestor, or a descendant
            edges[m].add(target)
        del is_dir_module

    if "--dot" in sys.argv:
        print("digraph modules {")
        for a in sorted(edges):
            for b in sorted(edges[a]):
                print(f'  "{"::".join(a)}" -> "{"::".join(b)}";')
        print("}")
        return 0

    # Tarjan's strongly connected components.
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    n_edges = sum(len(e) for e in edges.values())
    if sccs:
        for comp in sccs:
            names = sorted("::".join(c) for c in comp)
            print("cycle: " + " <-> ".join(names))
        return 1
    print(f"{len(edges)} modules, {n_edges} edges between non-nested modules, no cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
