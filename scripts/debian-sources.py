#!/usr/bin/python3
"""Prints the machine's Debian bookworm apt entries as deb822 stanzas.

Reads the one-line entries of ROOT/sources.list and ROOT/sources.list.d/*.list
and the deb822 stanzas of ROOT/sources.list.d/*.sources (disabled ones
skipped), keeps the `deb` entries with a bookworm* suite (URIs, those suites,
components, Signed-By) and prints each with `Types: TYPE`.

Used by scripts/test-package.sh (TYPE deb: the mirrors of the package test's
root) and scripts/install-deps.sh (TYPE deb-src: the entry `apt-get source
lwip` needs). A file named in --skip is not read (install-deps.sh's own).

Usage: debian-sources.py [--root /etc/apt] [--type deb|deb-src] [--skip NAME]
Exit 1 with a message on stderr when there is no such entry.
"""
import argparse
import glob
import os
import re
import sys

ap = argparse.ArgumentParser()
ap.add_argument("--root", default="/etc/apt")
ap.add_argument("--type", default="deb", choices=["deb", "deb-src"])
ap.add_argument("--skip", default="")
args = ap.parse_args()

entries = []


def add(types, uris, suites, comps, signed):
    suites = [s for s in suites if s.startswith("bookworm")]
    if "deb" in types and uris and suites:
        entries.append((uris, suites, comps or ["main"], signed))


def wanted(path):
    return os.path.basename(path) != args.skip


for f in [args.root + "/sources.list"] + sorted(glob.glob(args.root + "/sources.list.d/*.list")):
    if not wanted(f):
        continue
    try:
        text = open(f).read()
    except OSError:
        continue
    for ln in text.splitlines():
        ln = ln.split("#", 1)[0].strip()
        m = re.match(r"^(deb)\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)$", ln)
        if m:
            opts = m.group(2) or ""
            sb = re.search(r"signed-by=(\S+?)\s*[\]\s]", opts + " ")
            add(["deb"], [m.group(3)], [m.group(4)], m.group(5).split(), sb.group(1) if sb else "")
for f in sorted(glob.glob(args.root + "/sources.list.d/*.sources")):
    if not wanted(f):
        continue
    for stanza in re.split(r"\n\s*\n", open(f).read()):
        fields = {}
        for ln in stanza.splitlines():
            if ln.startswith("#") or ":" not in ln or ln[0].isspace():
                continue
            k, v = ln.split(":", 1)
            fields[k.strip().lower()] = v.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        add(fields.get("types", "").split(), fields.get("uris", "").split(), fields.get("suites", "").split(),
            fields.get("components", "").split(), fields.get("signed-by", ""))
if not entries:
    sys.exit(f"debian-sources.py: no Debian bookworm source in {args.root}/sources.list*")
for i, (uris, suites, comps, signed) in enumerate(entries):
    if i:
        print()
    print(f"Types: {args.type}\nURIs: {' '.join(uris)}\nSuites: {' '.join(suites)}\nComponents: {' '.join(comps)}")
    if signed:
        print(f"Signed-By: {signed}")
