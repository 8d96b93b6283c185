#!/usr/bin/env python3
"""Architecture invariant (ARCHITECTURE.md): no module imports a module that imports it back.

Reads every crate's src/ as text: a module's imports are the `crate::a::b` and `super::x` paths in
its code (comments and its `#[cfg(test)]` part left out). Prints each pair of modules that import
each other and exits 1 if there is one. Run by scripts/test.
"""
import itertools
import os
import re
import sys


def modules(src):
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if f.endswith(".rs"):
                path = os.path.join(root, f)
                rel = os.path.relpath(path, src)[:-3]
                name = rel.replace("/mod", "").replace("/", "::")
                mods["crate" if name in ("lib", "main") else name] = open(path).read()
    return mods


def imports(name, code, mods):
    code = "\n".join(l for l in code.split("\n") if not l.strip().startswith("//"))
    code = code.split("#[cfg(test)]")[0]
    out = set()
    for path in re.findall(r"crate::([a-z_]+(?:::[a-z_]+)?)", code):
        for cand in (path, path.split("::")[0]):
            if cand in mods and cand != name and not name.startswith(cand + "::"):
                out.add(cand)
                break
    parent = "::".join(name.split("::")[:-1])
    for m in re.findall(r"super::([a-z_]+)", code):
        cand = f"{parent}::{m}" if parent else m
        if cand in mods and cand != name:
            out.add(cand)
    return out


def main(root):
    bad = []
    for crate in sorted(os.listdir(root)):
        src = os.path.join(root, crate, "src")
        if not os.path.isfile(os.path.join(root, crate, "Cargo.toml")) or not os.path.isdir(src):
            continue
        mods = modules(src)
        deps = {m: imports(m, code, mods) for m, code in mods.items()}
        for a, b in itertools.combinations(sorted(mods), 2):
            if b in deps[a] and a in deps[b]:
                bad.append(f"{crate}: {a} and {b} import each other")
    for line in bad:
        print(line)
    print(f"module import circles: {len(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
