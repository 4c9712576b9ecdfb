#!/usr/bin/env python3
"""Checks that every relative link in the project's Markdown files resolves to a file or
directory of the repository (external links are not fetched: CI has no network).

    python3 scripts/check-links.py        # exit 1 and list the broken links, if any
"""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
files = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
broken = []
count = 0
for f in files:
    text = (ROOT / f).read_text()
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks hold no links
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://|mailto:|#", target):
            continue
        count += 1
        path = target.split("#")[0]
        if not (ROOT / f).parent.joinpath(path).exists():
            broken.append(f"{f}: {target}")
for b in broken:
    print("broken link:", b)
print(f"{count} relative links in {len(files)} Markdown files, {len(broken)} broken")
sys.exit(1 if broken else 0)
