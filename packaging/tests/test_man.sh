#!/usr/bin/env bash
# packaging_man_flags: the man page cannot drift from the program.
#  - every command's flags in the man page (the "*--flag*" lines of its
#    "## command" section; GLOBAL OPTIONS for the program itself) are exactly
#    the flags its --help lists (-h/--help are listed once, globally);
#  - the man page's COMMANDS are exactly the subcommands in --help;
#  - every environment variable the code reads (getenv/env/non_blank("NAME")
#    in cli/*.cc) is in ENVIRONMENT; every ExitCode in cli/up.h is in
#    EXIT STATUS;
#  - the built page (scdoc output) exists and, when man is installed, renders
#    without a warning.
# Usage: test_man.sh MAN_SOURCE.scd BUILT_MAN_PAGE BINARY
set -euo pipefail
SRC="$1" MAN="$2" BIN="$3"
ROOT="$(cd "$(dirname "$SRC")/.." && pwd)"
[[ -s $MAN ]] && head -c 4096 "$MAN" | grep -q '^\.TH' || { echo "FAIL: $MAN is not a built man page"; exit 1; }
echo "  ok: $MAN built"
if command -v man >/dev/null; then
  warn="$(MANWIDTH=100 man --warnings -l "$MAN" 2>&1 >/dev/null || true)"
  [[ -z $warn ]] || { echo "FAIL: man warns:"; echo "$warn"; exit 1; }
  echo "  ok: man -l renders it without a warning"
fi
HELPS="$(mktemp -d /tmp/osh-man-test.XXXXXX)"
trap 'rm -rf "$HELPS"' EXIT
"$BIN" --help >"$HELPS/_top"
for c in $(awk '/^Subcommands:/ {on = 1; next} on && /^  [a-z]/ {print $1}' "$HELPS/_top"); do
  "$BIN" "$c" --help >"$HELPS/$c"
done
/usr/bin/python3 - "$SRC" "$HELPS" "$ROOT" <<'PY'
import os, re, sys
src, helps, root = sys.argv[1:4]
lines = open(src).read().splitlines()

# Man page: flags per command ("" = global), sections' text.
man_flags, section, sub = {}, None, None
sections = {}
for ln in lines:
    if ln.startswith("# "):
        section, sub = ln[2:].strip(), None
        continue
    if ln.startswith("## ") and section == "COMMANDS":
        sub = ln[3:].strip()
        man_flags.setdefault(sub, set())
        continue
    sections.setdefault(section, []).append(ln)
    cmd = "" if section == "GLOBAL OPTIONS" else (sub if section == "COMMANDS" else None)
    if cmd is None or not ln.startswith("*-"):
        continue
    flags = re.findall(r"\*(--?[A-Za-z0-9][A-Za-z0-9-]*)\*", ln.split(" _")[0])
    man_flags.setdefault(cmd, set()).update(flags)

def help_flags(path):
    out, on = set(), False
    for ln in open(path):
        if re.match(r"^(Options|Positionals|Subcommands):", ln):
            on = ln.startswith("Options")
            continue
        m = re.match(r"^  (-[A-Za-z],)?(--[a-z0-9-]+)", ln) if on else None
        if m:
            if m.group(1):
                out.add(m.group(1)[:-1])
            out.add(m.group(2))
    return out

bad = 0
top = open(os.path.join(helps, "_top")).read()
subs = re.findall(r"^  ([a-z][a-z-]*) ", top.split("Subcommands:")[1], re.M)
man_subs = sorted(k for k in man_flags if k)
if sorted(subs) != man_subs:
    print(f"FAIL: commands: --help has {sorted(subs)}, the man page {man_subs}")
    bad += 1
else:
    print(f"  ok: commands {', '.join(subs)}")
for cmd in [""] + subs:
    h = help_flags(os.path.join(helps, cmd or "_top"))
    if cmd:
        h -= {"-h", "--help"}
    m = man_flags.get(cmd, set())
    name = cmd or "(global)"
    if h != m:
        if h - m:
            print(f"FAIL: {name}: in --help, not in the man page: {sorted(h - m)}")
        if m - h:
            print(f"FAIL: {name}: in the man page, not in --help: {sorted(m - h)}")
        bad += 1
    else:
        print(f"  ok: {name}: {len(h)} flags match --help")

env_text = "\n".join(sections.get("ENVIRONMENT", []))
used = set()
for f in os.listdir(os.path.join(root, "cli")):
    if f.endswith(".cc"):
        used |= set(re.findall(r'(?:getenv|env|non_blank)\("([A-Z][A-Z0-9_]*)"\)',
                               open(os.path.join(root, "cli", f)).read()))
missing = sorted(v for v in used if f"*{v}*" not in env_text)
if missing:
    print(f"FAIL: ENVIRONMENT lacks {missing} (read in cli/*.cc)")
    bad += 1
else:
    print(f"  ok: ENVIRONMENT names all {len(used)} variables the code reads: {', '.join(sorted(used))}")

codes = re.findall(r"kExit\w+\s*=\s*(\d+)", open(os.path.join(root, "cli", "up.h")).read())
exit_text = "\n".join(sections.get("EXIT STATUS", []))
miss = [c for c in codes if f"*{c}*" not in exit_text]
if miss or not codes:
    print(f"FAIL: EXIT STATUS lacks {miss} (cli/up.h ExitCode)")
    bad += 1
else:
    print(f"  ok: EXIT STATUS has every ExitCode ({', '.join(codes)})")
sys.exit(1 if bad else 0)
PY
echo "PASS: man page"
