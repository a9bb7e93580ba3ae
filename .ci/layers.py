#!/usr/bin/env python3
"""Fails when the host library's modules import each other in a circle.

Each file under host/src belongs to a top-level module (src/bus/redis/mod.rs to
`bus`, src/cluster.rs to `cluster`). An edge A -> B is any `crate::B` path
written in A outside its tests. A cycle among those edges means no layer
order exists; the script prints every cycle's members and the lines that
make it, and exits 1. Run it from anywhere: `python3 .ci/layers.py`.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "host" / "src"
PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
USE_GROUP = re.compile(r"\buse\s+crate::\{([^;]*)\}", re.S)


def owner(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return parts[0]


def code_without_tests(text: str) -> str:
    # Tests may reach anywhere; cut the `#[cfg(test)] mod tests` block, which
    # by the house's convention ends the file.
    at = text.find("#[cfg(test)]\nmod tests")
    return text if at < 0 else text[:at]


def edges():
    found = {}
    for path in sorted(ROOT.rglob("*.rs")):
        if "bin" in path.relative_to(ROOT).parts:
            continue
        me = owner(path)
        text = code_without_tests(path.read_text())
        for lineno, line in enumerate(text.splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith("//"):
                continue
            for target in PATH.findall(line):
                if target != me:
                    found.setdefault((me, target), []).append(f"{path.relative_to(ROOT.parent)}:{lineno}")
        for group in USE_GROUP.findall(text):
            for target in re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)", group):
                if target != me:
                    found.setdefault((me, target), []).append(f"{path.relative_to(ROOT.parent)} (use group)")
    return found


def cycles(graph):
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def main():
    found = edges()
    graph = {}
    for a, b in found:
        graph.setdefault(a, set()).add(b)
    bad = cycles(graph)
    if not bad:
        print(f"layers: {len(graph)} host modules, {len(found)} imports between them, no cycle")
        return 0
    for comp in bad:
        print("import cycle between host modules: " + ", ".join(comp))
        for (a, b), where in sorted(found.items()):
            if a in comp and b in comp:
                print(f"  {a} -> {b}: {', '.join(where[:3])}")
    print("break each cycle so every module imports only from layers below it (README: Layout)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
