"""Plot the soak's Envoy RSS samples (`soak` writes <out>/rss.csv) as a PNG.

Usage: python3 sandbox/soak/plot.py target/soak/rss.csv target/soak/rss.png
Needs matplotlib (`make soak` installs it into .tools/python).
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dst):
    rows = list(csv.DictReader(open(src)))
    t = [int(r["seconds"]) for r in rows]
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    for key, label in [
        ("http_kb", "HTTP, PERMISSIVE, policy set replaced every few seconds"),
        ("strict_kb", "HTTP, STRICT (plaintext refused)"),
        ("tcp_kb", "TCP"),
    ]:
        ax.plot(t, [int(r[key]) / 1024 for r in rows], label=label, linewidth=1.2)
    ax2 = ax.twinx()
    ax2.plot(t, [int(r["requests"]) / 1e6 for r in rows], color="grey", linestyle=":",
             label="requests (millions, right axis)")
    ax2.set_ylabel("requests (millions)")
    ax.set_xlabel("seconds")
    ax.set_ylabel("Envoy RSS (MiB)")
    lo = min(int(r[k]) for r in rows for k in ("http_kb", "strict_kb", "tcp_kb")) / 1024
    hi = max(int(r[k]) for r in rows for k in ("http_kb", "strict_kb", "tcp_kb")) / 1024
    ax.set_ylim(max(0, lo - 20), hi + 20)
    total = rows[-1]["requests"] if rows else 0
    ax.set_title(f"meshauthz soak: Envoy 1.40 RSS sampled every second ({total} requests)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(dst)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
