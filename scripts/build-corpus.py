#!/usr/bin/env python3
"""Builds the per-source training and dev pairs of issue 30 from what
scripts/fetch-data.sh fetched (called by it; see docs/data.md).

Each output line is {"summary": query, "description": document, "source": group,
"corpus": name}: the field names of the Debian data, so that `duetdb train` and `duetdb
eval` read every source alike. Pairs of one group (a Python module, a crate's file, a
glossary entry, a Debian source package) are never each other's negatives, and a group
is wholly in train or wholly in dev. Dev pairs have a query no other pair of any source
has, so each has one relevant document. Texts that appear in the Debian dev split are
dropped from every other source.

Outputs in --out: train.jsonl (every source, shuffled), dev-SOURCE.jsonl (at most
--dev-size pairs each), sizes.json, and train-extra.jsonl when --download holds extra/:
training pairs only, from the additions fetch-data.sh keeps there, whose texts are in
neither train.jsonl nor a dev split (the dev splits do not change with them).
"""
import argparse
import ast
import gzip
import hashlib
import io
import json
import random
import re
import sys
import tarfile
import zipfile
from pathlib import Path

MIN_DOC_WORDS = 12
MAX_DOC_CHARS = 1500


def norm(s):
    return " ".join(s.lower().split())


def clean(s):
    """Collapses whitespace and reStructuredText/Markdown markup to plain words."""
    s = re.sub(r":[a-z]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`", r"\1", s)  # :func:`x`, :class:`~a.b`
    s = re.sub(r"\[`?([^\]`]+)`?\]\([^)]*\)", r"\1", s)  # [`x`](link)
    s = re.sub(r"\[`([^\]`]+)`\]", r"\1", s)  # [`x`]
    s = re.sub(r"\.\. [a-z-]+::", "", s)  # rST directives (.. note::, .. versionchanged::)
    s = s.replace("``", "").replace("`", "")
    return " ".join(s.split())


def first_sentence(par):
    m = re.match(r"(.+?[.!?])(\s|$)", par)
    return m.group(1) if m else par


def split_paragraphs(text):
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]


def usable(query, doc, min_query_words=2):
    qw = len(query.split())
    return min_query_words <= qw <= 40 and len(doc.split()) >= MIN_DOC_WORDS


def admissible(corpus, query, doc, banned, seen_docs, query_count):
    """The rules a pair must pass (see docs/data.md): usable lengths (a glossary term may be
    one word), neither text in `banned`, a document not used before (then marked used),
    a query that occurs once."""
    nq, nd = norm(query), norm(doc)
    if not usable(query, doc, 1 if corpus == "glossary" else 2) or nq in banned or nd in banned or nd in seen_docs or query_count[nq] > 1:
        return False
    seen_docs.add(nd)
    return True


# ---- python: docstrings ------------------------------------------------------------


def strip_doctests(text):
    out, skip = [], False
    for line in text.splitlines():
        t = line.strip()
        if t.startswith(">>>") or t.startswith("..."):
            skip = True
            continue
        if skip and t:  # the doctest's expected output
            continue
        skip = False
        out.append(line)
    return "\n".join(out)


def python_pairs(name, source):
    """(group, query, document) of every public documented function, class and method."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return
    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if child.name.startswith("_") and child.name != "__init__":
                    continue
                qual = f"{prefix}{child.name}"
                doc = ast.get_docstring(child)
                if doc:
                    pars = split_paragraphs(strip_doctests(doc))
                    if len(pars) >= 2:
                        query = clean(pars[0])
                        if isinstance(child, ast.ClassDef):
                            head = f"class {qual}"
                        else:
                            args = ", ".join(a.arg for a in child.args.args if a.arg not in ("self", "cls"))
                            head = f"{qual}({args})"
                        rest = clean(" ".join(pars[1:]))[:MAX_DOC_CHARS]
                        yield query, f"{head}: {rest}"
                if isinstance(child, ast.ClassDef):
                    yield from walk(child, qual + ".")
    yield from walk(tree, "")


def wheel_sources(folder, skip=()):
    """(path, text) of the Python files of every wheel in `folder`, tests (and paths with
    any part in `skip`) left out."""
    for whl in sorted(folder.glob("*.whl")):
        with zipfile.ZipFile(whl) as z:
            for n in sorted(z.namelist()):
                parts = set(n.split("/"))
                if n.endswith(".py") and not {"tests", "test"} & parts and not set(skip) & parts:
                    yield n, z.read(n).decode("utf-8", "replace")


def python_files(download):
    yield from wheel_sources(download / "wheel")
    deb = next((download / "deb").glob("libpython3.11-stdlib_*.deb"))
    for n, data in deb_members(deb):
        if n.endswith(".py") and "/test/" not in n and "/tests/" not in n and "/idlelib/" not in n:
            yield n.split("python3.11/", 1)[-1], data.decode("utf-8", "replace")


def deb_members(path):
    """Files of a .deb's data archive (an ar archive holding data.tar.*)."""
    raw = path.read_bytes()
    assert raw.startswith(b"!<arch>\n"), f"{path} is not a Debian package"
    pos = 8
    while pos < len(raw):
        header = raw[pos:pos + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
        body = raw[pos + 60:pos + 60 + size]
        pos += 60 + size + (size & 1)
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body)) as t:
                for m in t.getmembers():
                    if m.isfile():
                        yield m.name, t.extractfile(m).read()


# ---- rust: /// docs ------------------------------------------------------------------

ITEM = re.compile(r"^\s*pub\s+(?:(?:const|async|unsafe|extern \"C\")\s+)*(fn|struct|enum|trait|type|const|static|mod|union)\s+([A-Za-z_][A-Za-z0-9_]*)")


def rust_pairs(source):
    lines = source.splitlines()
    doc = []
    for line in lines:
        t = line.strip()
        if t.startswith("///") and not t.startswith("////"):
            doc.append(t[3:][1:] if t[3:].startswith(" ") else t[3:])
            continue
        if t.startswith("#[") or (doc and not t):
            continue
        m = ITEM.match(line)
        if doc and m:
            text, fence = [], False
            for d in doc:
                if d.strip().startswith("```"):
                    fence = not fence
                    continue
                if not fence and not d.lstrip().startswith("# "):
                    text.append(d)
            pars = split_paragraphs("\n".join(text))
            if pars:
                query = clean(first_sentence(clean(pars[0])))
                rest = clean(" ".join([clean(pars[0])[len(query):]] + pars[1:]))[:MAX_DOC_CHARS]
                head = line.strip().split("{")[0].split(" where ")[0].rstrip(" ;")[:200]
                yield query, f"{head}: {rest}"
        doc = []


def rust_files(cargo_lock):
    text = cargo_lock.read_text()
    home = Path.home() / ".cargo" / "registry" / "cache"
    for block in text.split("[[package]]")[1:]:
        name = re.search(r'name = "([^"]+)"', block).group(1)
        version = re.search(r'version = "([^"]+)"', block).group(1)
        if "checksum" not in block:
            continue  # a workspace crate (ours)
        found = list(home.glob(f"*/{name}-{version}.crate"))
        if not found:
            sys.exit(f"build-corpus: {name}-{version}.crate is not in cargo's cache (run `cargo fetch --locked`)")
        with tarfile.open(found[0]) as t:
            for m in sorted(t.getmembers(), key=lambda m: m.name):
                parts = m.name.split("/")
                if m.isfile() and m.name.endswith(".rs") and not {"tests", "benches", "examples"} & set(parts):
                    yield name, m.name, t.extractfile(m).read().decode("utf-8", "replace")


# ---- glossaries: dictd files ---------------------------------------------------------

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64(s):
    n = 0
    for c in s:
        n = n * 64 + B64.index(c)
    return n


def glossary_pairs(download, dicts=("foldoc", "jargon")):
    """(group, term, entry) of every entry of the dictd dictionaries `dicts`, each from
    its Debian package `dict-NAME` in `download`/deb."""
    for dict_name in dicts:
        deb = next((download / "deb").glob(f"dict-{dict_name}_*.deb"))
        files = dict(deb_members(deb))
        data = gzip.decompress(files[f"./usr/share/dictd/{dict_name}.dict.dz"])
        index = files[f"./usr/share/dictd/{dict_name}.index"].decode("utf-8", "replace")
        seen = set()
        for line in index.splitlines():
            head, off, size = line.split("\t")[:3]
            if head.startswith("00database") or (off, size) in seen:
                continue  # dictd's own entries; aliases of an entry already taken
            seen.add((off, size))
            entry = data[b64(off):b64(off) + b64(size)].decode("utf-8", "replace")
            first, _, body = entry.partition("\n")
            body = re.sub(r"\{\(?(https?://[^}]*?)\)?\}", "", body)  # links
            body = re.sub(r"\(\d{4}-\d{2}-\d{2}\)", "", body)  # revision dates
            body = body.replace("{", "").replace("}", "")
            # Alias lines (other spellings of the term) come before the indented text.
            rest = [l for l in body.splitlines() if l.startswith(" ") or not l.strip()]
            yield f"{dict_name}:{first.strip()}", first.strip(), clean("\n".join(rest))[:MAX_DOC_CHARS]


# ---- training-only additions ---------------------------------------------------------

# Folders of wheels that carry copies of other projects' code: their docstrings could be
# those of a dev module.
VENDORED = ("_vendor", "vendor", "externals", "_vendored", "extern")


def extra_pairs(extra, known, max_per_source, rng):
    """Training pairs of the additions in `extra` (fetch-data.sh's extra/ folder): every
    pair of the extra wheels (python) and at most `max_per_source` of WordNet (glossary),
    none with a query or document text in `known` (the normalised texts of train.jsonl
    and every dev split) or used twice."""
    raw = {"python": [], "glossary": []}
    for path, src in wheel_sources(extra / "wheel", VENDORED):
        raw["python"] += [("python:" + path, q, d) for q, d in python_pairs(path, src)]
    raw["glossary"] = list(glossary_pairs(extra, ("wn",)))
    count = {}
    for pairs in raw.values():
        for _, q, _ in pairs:
            count[norm(q)] = count.get(norm(q), 0) + 1
    rows, sizes, seen = [], {}, set()
    for corpus, pairs in raw.items():
        kept, dropped = [], 0
        for group, q, d in pairs:
            if not admissible(corpus, q, d, known, seen, count):
                dropped += 1
                continue
            kept.append({"summary": q, "description": d, "source": group, "corpus": corpus})
        rng.shuffle(kept)
        rows += kept[:max_per_source]
        sizes[corpus] = {"extracted": len(pairs), "dropped": dropped, "train": min(len(kept), max_per_source), "train_available": len(kept)}
    rng.shuffle(rows)
    return rows, sizes


# ---- assembly ------------------------------------------------------------------------


def dev_group(group, share):
    return int(hashlib.sha256(group.encode()).hexdigest()[:8], 16) % 1000 < share * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--download", type=Path, required=True)
    ap.add_argument("--cargo-lock", type=Path, required=True)
    ap.add_argument("--debian", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--dev-size", type=int, default=600)
    ap.add_argument("--max-train", type=int, default=25000, help="per source")
    ap.add_argument("--seed", type=int, default=30)
    ap.add_argument("--max-extra", type=int, default=20000, help="per source of train-extra.jsonl")
    a = ap.parse_args()

    debian = [json.loads(l) for l in gzip.open(a.debian, "rt")]
    debian_dev_texts = {norm(d[f]) for d in debian if d["split"] == "dev" for f in ("summary", "description")}

    raw = {"python": [], "rust": [], "glossary": []}
    for path, src in python_files(a.download):
        group = "python:" + path
        raw["python"] += [(group, q, d) for q, d in python_pairs(path, src)]
    for crate, path, src in rust_files(a.cargo_lock):
        group = f"rust:{crate}:{path.split('/', 1)[-1]}"
        raw["rust"] += [(group, q, d) for q, d in rust_pairs(src)]
    raw["glossary"] = list(glossary_pairs(a.download))

    rng = random.Random(a.seed)
    sizes = {}
    # Queries and documents seen in any source: a text is used once.
    query_count = {}
    for pairs in raw.values():
        for _, q, _ in pairs:
            query_count[norm(q)] = query_count.get(norm(q), 0) + 1
    train, seen_docs = [], set()
    for corpus, pairs in raw.items():
        kept = {"train": [], "dev": []}
        dropped = 0
        for group, q, d in pairs:
            if not admissible(corpus, q, d, debian_dev_texts, seen_docs, query_count):
                dropped += 1
                continue
            split = "dev" if dev_group(group, 0.1) else "train"
            kept[split].append({"summary": q, "description": d, "source": group, "corpus": corpus})
        rng.shuffle(kept["train"])
        rng.shuffle(kept["dev"])
        tr, dv = kept["train"][: a.max_train], kept["dev"][: a.dev_size]
        train += tr
        write(a.out / f"dev-{corpus}.jsonl", dv)
        sizes[corpus] = {"extracted": len(pairs), "dropped": dropped, "train": len(tr), "train_available": len(kept["train"]), "dev": len(dv), "dev_available": len(kept["dev"])}
    deb_train = [dict(summary=d["summary"], description=d["description"], source=d["source"], corpus="debian") for d in debian if d["split"] == "train"]
    deb_dev = [dict(summary=d["summary"], description=d["description"], source=d["source"], corpus="debian") for d in debian if d["split"] == "dev"]
    train += deb_train
    write(a.out / "dev-debian.jsonl", deb_dev[: a.dev_size])
    sizes["debian"] = {"train": len(deb_train), "dev": min(len(deb_dev), a.dev_size), "dev_available": len(deb_dev)}
    rng.shuffle(train)
    write(a.out / "train.jsonl", train)
    if (a.download / "extra").is_dir():
        known = {norm(r[f]) for r in train for f in ("summary", "description")} | debian_dev_texts
        for corpus in ("python", "rust", "glossary", "debian"):
            for line in open(a.out / f"dev-{corpus}.jsonl"):
                r = json.loads(line)
                known |= {norm(r["summary"]), norm(r["description"])}
        extra, sizes["extra"] = extra_pairs(a.download / "extra", known, a.max_extra, random.Random(a.seed))
        write(a.out / "train-extra.jsonl", extra)
    (a.out / "sizes.json").write_text(json.dumps(sizes, indent=1) + "\n")
    print(json.dumps(sizes))


def write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
