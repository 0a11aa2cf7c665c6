#!/usr/bin/env python3
"""Fails on a back edge between top-level modules of src/: a `crate::x` path in module `m`
where `x` sits above `m` in LAYERS. Modules in one layer may use each other only if listed
together in one entry, separated by `|` (none are today).

LAYERS runs bottom-up, the direction of the arrows in README.md's "Architecture":
- clock, model: shared values (ids come from mxmedia-proto), depending on nothing in the crate;
- ttl_cache, singleflight, metrics: generic helpers;
- config, then tls (the listener's certificate) and net (guarded outgoing clients, their TLS
  and address policy);
- store (sled and blobs), then thumbnail and federation (neither uses the other), each with
  its own error type (`StoreError`, `PoolError`, `FetchError`);
- error: the Matrix error clients see, and (error/convert.rs) the one place where each lower
  layer's error becomes it; then auth and the layers above, which answer with it;
- media, the service, then preview, which stores its images through media;
- backup (the command and socket), import (`mxmedia import`, which talks to a running server
  through backup's socket), export (`mxmedia export`, the way back, likewise), migrate
  (`mxmedia migrate-store`, likewise), doctor (the command checking the path from outside, and
  the nonce the server recognises its requests by), state (what handlers share), http (the
  handlers).
lib.rs and main.rs wire everything together and are not checked; cli (the binary's subcommand
bodies, beside main.rs) sits on top.

A path counts wherever it is written, comments included: a doc naming `crate::x` is a
reference to x. Only the top-level items of `use crate::{...}` name modules.
"""
import pathlib, re, sys

LAYERS = [
    "clock", "model", "ttl_cache", "singleflight", "metrics", "config", "tls", "net",
    "store", "thumbnail", "federation", "error", "auth", "media", "preview", "backup", "import",
    "export", "migrate", "doctor", "state", "http", "cli",
]
rank = {m: i for i, entry in enumerate(LAYERS) for m in entry.split("|")}
src = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "src")
path_re = re.compile(r"\bcrate::(\w+)")
brace_re = re.compile(r"\buse\s+crate::\{")


def brace_items(text, start):
    """The first path segment of each top-level item of the group opening at `start`."""
    items, depth, item_start = [], 1, start
    for i in range(start, len(text)):
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        if (c == "," and depth == 1) or depth == 0:
            items.append(text[item_start:i])
            item_start = i + 1
        if depth == 0:
            break
    heads = (re.match(r"\s*(\w+)", item) for item in items)
    return {m.group(1) for m in heads if m}


bad = []
for f in sorted(src.rglob("*.rs")):
    rel = f.relative_to(src)
    top = rel.parts[0].removesuffix(".rs")
    if top in ("lib", "main"):
        continue
    text = f.read_text()
    used = set(path_re.findall(text))
    for m in brace_re.finditer(text):
        used |= brace_items(text, m.end())
    if top not in rank:
        bad.append(f"{rel}: module `{top}` has no layer in .ci/layers.py")
        continue
    for dep in sorted(used):
        if dep == top or dep in ("self", "super"):
            continue
        if dep not in rank:
            continue
        if rank[dep] > rank[top]:
            bad.append(f"{rel}: `{top}` uses `crate::{dep}`, a layer above it")
for line in bad:
    print(line)
print(f"{len(bad)} back edges")
sys.exit(1 if bad else 0)
