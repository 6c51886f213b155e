#!/usr/bin/python3
"""benchchart: the benchmark as a picture (issue 17.5).

Reads the bench.json that `benchtool.py report` writes (bench.sh) and draws one
PNG with three panels, each path relative to path C, the direct relay
(`openshell-tunnel forward`: one ForwardTcp stream per connection, no TUN),
whose value is 1.0 (the dashed line):

  throughput   upload and download Gbit/s                  (higher is better)
  latency      connect + first byte, p50 and p95           (lower is better)
  CPU per GiB  upload and download, CPU seconds per GiB of  (lower is better)
               every process on the path that the benchmark
               watches except the load tool and the server:
               client-side tunnel process, gateway,
               supervisor, and sshd for path B

Bars are the medians over the repetitions; the whiskers span min..max, each
divided by C's median. Path A (plain TCP, no relay) is drawn where it has a
value (its CPU row has no relay processes, so it is left out there); bars
taller than the axis are clipped and labelled with their value.

Usage: benchchart.py BENCH_JSON OUT_PNG [--title TEXT]
Needs python3-matplotlib (scripts/install-deps.sh). Exit 0 on success, 2 when
the JSON has no path C.
"""
import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

BASE = "C"
CPU_GROUPS = ("tunnel", "gateway", "supervisor", "sshd")


def median_range(st):
    """(median, min, max) of a stats dict, or None."""
    if not st:
        return None
    return st["median"], st["min"], st["max"]


def cpu_total(s, direction):
    """Summed CPU s/GiB of the watched relay processes: (median, min, max)."""
    parts = [median_range(s.get(f"{direction}_cpu_s_per_gib_{g}")) for g in CPU_GROUPS]
    parts = [p for p in parts if p]
    if not parts:
        return None
    return tuple(sum(p[i] for p in parts) for i in range(3))


def metrics(s):
    """The chart's metrics of one path summary: name -> (median, min, max)."""
    return {
        "upload Gbit/s": median_range(s.get("bulk_up_gbps")),
        "download Gbit/s": median_range(s.get("bulk_down_gbps")),
        "connect+1st byte p50": median_range(s.get("latency_p50_ms")),
        "connect+1st byte p95": median_range(s.get("latency_p95_ms")),
        "upload CPU s/GiB": cpu_total(s, "bulk_up"),
        "download CPU s/GiB": cpu_total(s, "bulk_down"),
    }


PANELS = (
    ("throughput (higher is better)", ("upload Gbit/s", "download Gbit/s")),
    ("latency (lower is better)", ("connect+1st byte p50", "connect+1st byte p95")),
    ("CPU per GiB, relay processes (lower is better)", ("upload CPU s/GiB", "download CPU s/GiB")),
)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bench_json")
    ap.add_argument("out_png")
    ap.add_argument("--title", default="")
    a = ap.parse_args(argv)
    with open(a.bench_json) as f:
        doc = json.load(f)
    by = doc["summary"]
    if BASE not in by:
        print(f"benchchart: {a.bench_json} has no path {BASE} (the direct relay): nothing to compare with",
              file=sys.stderr)
        return 2
    paths = sorted(by)
    m = {p: metrics(by[p]) for p in paths}
    base = m[BASE]
    fig, axes = plt.subplots(1, len(PANELS), figsize=(15, 4.8))
    colors = {"A": "#9e9e9e", "B": "#d95f02", "C": "#1b9e77", "D": "#7570b3", "E": "#e7298a",
              "U": "#e6ab02"}
    ymax = 3.0
    for ax, (title, keys) in zip(axes, PANELS):
        width = 0.8 / len(paths)
        for i, p in enumerate(paths):
            if p == "A" and title.startswith("CPU"):
                continue  # plain TCP: no relay process to measure
            xs, ys, lo, hi = [], [], [], []
            for k, key in enumerate(keys):
                v, b = m[p][key], base[key]
                if not v or not b or b[0] == 0:
                    continue
                xs.append(k + (i - (len(paths) - 1) / 2) * width)
                ys.append(v[0] / b[0])
                lo.append(max(0.0, v[0] / b[0] - v[1] / b[0]))
                hi.append(max(0.0, v[2] / b[0] - v[0] / b[0]))
            if not xs:
                continue
            shown = [min(y, ymax) for y in ys]
            ax.bar(xs, shown, width, color=colors.get(p, None), label=f"{p}: {by[p]['label']}",
                   yerr=[lo, hi], capsize=2, error_kw={"elinewidth": 0.8})
            for x, y in zip(xs, ys):
                ax.annotate(f"{y:.2f}" if y < ymax else f"{y:.1f}↑", (x, min(y, ymax)),
                            ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
        ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8)
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels(keys, fontsize=8)
        ax.set_ylim(0, ymax * 1.08)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("relative to C (forward, direct relay) = 1")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    extra = doc.get("extra", {})
    params = doc.get("params", {})
    sub = (f"bulk {params.get('bulk_bytes', 0) >> 20} MiB, {params.get('reps', '?')} rep(s)"
           f"{', SMOKE run: sizes too small to mean much' if extra.get('smoke') else ''}; git {extra.get('git', '?')}")
    fig.suptitle((a.title + "\n" if a.title else "") + sub, fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95 if not a.title else 0.92))
    fig.savefig(a.out_png, dpi=110)
    print(f"benchchart: wrote {a.out_png}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
