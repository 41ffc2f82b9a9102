#!/usr/bin/env python3
"""Plot docs/bench/results.csv (written by `cargo bench --bench compare`) to
docs/bench/scale.png: apply time and connection rate against the number of excluded CIDRs.
Needs matplotlib (`pip install matplotlib`)."""
import csv
import os
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

here = os.path.join(os.path.dirname(__file__), "..", "docs", "bench")
rows = list(csv.DictReader(open(os.path.join(here, "results.csv"))))

apply = defaultdict(list)
conns = defaultdict(list)
for r in rows:
    n = int(r["n"])
    if r["section"] == "apply" and n > 0:
        apply[r["row"]].append((n, float(r["median"]), float(r["min"]), float(r["max"])))
    elif r["section"] == "connrate":
        conns[r["row"]].append((n, float(r["median"]), float(r["min"]), float(r["max"])))

fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5))
for name, pts in sorted(apply.items()):
    pts.sort()
    xs = [p[0] for p in pts]
    a.errorbar(xs, [p[1] for p in pts],
               yerr=[[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]],
               marker="o", capsize=3, label=name.replace("`", ""))
a.set_xscale("log")
a.set_yscale("log")
a.set_xlabel("excluded CIDRs (N)")
a.set_ylabel("apply, median ms (bars: min-max)")
a.set_title("Replace Istio's capture in place")
a.grid(True, which="both", alpha=0.3)
a.legend(fontsize=8)

for name, pts in sorted(conns.items()):
    pts.sort()
    xs = [max(p[0], 1) for p in pts]
    b.errorbar(xs, [p[1] for p in pts],
               yerr=[[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]],
               marker="o", capsize=3, label=name)
b.set_xscale("symlog", linthresh=1)
b.set_xlabel("excluded CIDRs (N; 0 plotted at 1)")
b.set_ylabel("connections/s through the redirect (median)")
b.set_title("New connections through the outbound redirect")
b.set_ylim(bottom=0)
b.grid(True, alpha=0.3)
b.legend(fontsize=8)

fig.suptitle("nftmesh vs iptables-restore / nft -f, one run, 2-core VM, kernel 6.18")
fig.tight_layout()
out = os.path.join(here, "scale.png")
fig.savefig(out, dpi=110)
print("wrote", out)
