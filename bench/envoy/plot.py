"""Draw a timed `bench-envoy --realistic --csv FILE` run: throughput (ratio to no filter) and
added server CPU per request against the number of policies, for Envoy's native RBAC (as istiod
writes it), meshauthz's full chain, its one-stage chain and its chain with the native enforce
stage, on issue 12's realistic mix; and, as a level line, the floor row of the same run (`w-floor`:
a proxy-wasm filter that only reads one value and writes one, what any authorization filter in
Wasm spends before deciding anything).

usage: python3 bench/envoy/plot.py target/bench-envoy.csv OUT_DIR
writes OUT_DIR/throughput.png and OUT_DIR/cpu.png
"""

import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CHAINS = [
    ("rbac", "native RBAC (istiod)", "tab:red"),
    ("full", "meshauthz, full chain", "tab:blue"),
    ("decide", "meshauthz, one stage (enforce: decide)", "tab:green"),
    ("native", "meshauthz, native enforce stage (enforce: native)", "tab:purple"),
]


FLOOR_KEY = "w-floor"
FLOOR_LABEL = "floor: a proxy-wasm filter that reads one value and writes one (w-floor)"


def load(path):
    """The current module's realistic-mix rows (not the other builds: `*-base*`, `*-nocel`), and
    the floor row if the run has one."""
    with open(path, newline="") as f:
        all_rows = list(csv.DictReader(f))
    rows = [
        r
        for r in all_rows
        if r["mix"] == "realistic" and "-base" not in r["key"] and not r["key"].endswith("-nocel")
    ]
    floor = next((r for r in all_rows if r["key"] == FLOOR_KEY), None)
    return rows, floor


def series(rows, chain, audit, first, column):
    pts = []
    for r in rows:
        if r["chain"] != chain or r["audit"] != audit:
            continue
        policies = int(r["policies"])
        # At 10 policies only the last ALLOW is measured: it stands for both lines.
        if r["first"] != first and policies > 12:
            continue
        pts.append((policies, float(r[column])))
    return sorted(pts)


def draw(rows, column, ylabel, title, out, floor=None, logy=False, wasm_floor=None):
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, audit in zip(axes, ["true", "false"]):
        for chain, label, colour in CHAINS:
            for first, style in [("false", "-"), ("true", "--")]:
                pts = series(rows, chain, audit, first, column)
                if not pts:
                    continue
                xs, ys = zip(*pts)
                at = "first ALLOW" if first == "true" else "last ALLOW"
                ax.plot(xs, ys, style, marker="o", color=colour, label=f"{label}, {at}")
        if floor is not None:
            ax.axhline(floor, color="grey", linewidth=0.8, linestyle=":")
        if wasm_floor is not None:
            ax.axhline(float(wasm_floor[column]), color="black", linewidth=1.0, linestyle="-.", label=FLOOR_LABEL)
        ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel("policies on the workload")
        ax.set_title("with the AUDIT policy" if audit == "true" else "without AUDIT")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(ylabel)
    # One legend for both panels (some chains run only with or only without AUDIT).
    seen = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    axes[1].legend(list(seen.values()), list(seen.keys()), fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"plot: {out}")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    rows, wasm_floor = load(sys.argv[1])
    if not rows:
        sys.exit(f"{sys.argv[1]}: no realistic-mix rows (run bench-envoy with --realistic --csv)")
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    draw(
        rows,
        "ratio",
        "throughput / no filter (same round)",
        "Envoy 1.40, one worker: requests per second against no authz filter",
        out / "throughput.png",
        floor=0.75,
        wasm_floor=wasm_floor,
    )
    draw(
        rows,
        "added_us",
        "server CPU µs per request over no filter (log scale)",
        "Envoy 1.40, one worker: server CPU added per request",
        out / "cpu.png",
        logy=True,
        wasm_floor=wasm_floor,
    )


if __name__ == "__main__":
    main()
