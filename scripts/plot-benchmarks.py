#!/usr/bin/python3
# Turns restore_bench and fork_bench JSON output (--json-out) into SVG plots,
# one file per measurement found in each input, named after the input:
#
#   scripts/plot-benchmarks.py --out-dir plots bench.json fork.json
#
# restore_bench: restore time and bytes read from storage per variant, by
# working set (restore section), by working set and readahead (cold section),
# each cold variant's time against file_cold, per-fault latency, the tinyvmm
# restores, a chain against one file (layers section), restores from the
# object store against file_cold and the bytes they fetched (store section). fork_bench: fork time
# and time to first progress against memory size, per backend; the hot-pool
# cycle (fork of a running fork, its standby, the bytes it wrote).
#
# Run by hand, not in CI. Needs Debian's python3-matplotlib, which installs
# for /usr/bin/python3 (hence the interpreter above, not `env python3`).
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402


def variants(entry):
    """The variants of a section entry that ran (skipped ones have no median)."""
    return [v for v in entry["variants"] if "median_ms" in v]


def save(fig, out_dir, stem, what):
    path = os.path.join(out_dir, f"{stem}-{what}.svg")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    print(path)


def sample_range(v, key):
    """(below, above) the median: the spread of the samples, for error bars."""
    samples = v.get(f"samples_{key}", [])
    median = v.get(f"median_{key}", 0)
    if not samples:
        return (0, 0)
    return (median - min(samples), max(samples) - median)


def bars_by_variant(ax, entries, labels, key, title, unit, reference=None):
    """Grouped horizontal bars: one group per variant, one bar per entry
    (entries that share variant names: working sets or readahead values)."""
    names = []
    for e in entries:
        for v in variants(e):
            if v["name"] not in names:
                names.append(v["name"])
    height = 0.8 / max(len(entries), 1)
    for i, (e, label) in enumerate(zip(entries, labels)):
        by_name = {v["name"]: v for v in variants(e) if f"median_{key}" in v}
        ys, xs, errs = [], [], ([], [])
        for n, name in enumerate(names):
            if name in by_name:
                v = by_name[name]
                ys.append(n + i * height)
                xs.append(v[f"median_{key}"])
                lo, hi = sample_range(v, key)
                errs[0].append(lo)
                errs[1].append(hi)
        ax.barh(ys, xs, height=height, xerr=errs, label=label, capsize=2)
    ax.set_yticks([n + height * (len(entries) - 1) / 2 for n in range(len(names))])
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(unit)
    ax.set_title(title, fontsize=10)
    if reference is not None:
        ax.axvline(reference[0], color="black", linestyle="--", linewidth=1, label=reference[1])
    ax.legend(fontsize=7)
    ax.grid(axis="x", alpha=0.3)


def plot_restore(result, out_dir, stem):
    entries = result["restore"]
    labels = [f'{e["working_set"]} ({e["distinct_mib"]:.0f} MiB)' for e in entries]
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(variants(entries[0])) * len(entries) + 1.5))
    bars_by_variant(ax, entries, labels, "ms", "Restore time, snapshot in the page cache (median, range of runs)",
                    "ms")
    save(fig, out_dir, stem, "restore-time")
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(variants(entries[0])) * len(entries) + 1.5))
    bars_by_variant(ax, entries, labels, "read_mib", "Bytes read from storage per restore (median)", "MiB")
    save(fig, out_dir, stem, "restore-read")


def cold_groups(result):
    """The cold section's entries grouped by working set, in order."""
    groups = {}
    for entry in result["cold"]["results"]:
        groups.setdefault(entry["working_set"], []).append(entry)
    return groups


def ra_label(entry):
    own = " (device's own)" if entry.get("readahead_is_device_default") else ""
    return f'readahead {entry["readahead_kib"]} KiB{own}'


def plot_cold(result, out_dir, stem):
    groups = cold_groups(result)
    rows = max(len(variants(e)) for g in groups.values() for e in g)
    for what, key, unit, title in [
        ("cold-time", "ms", "ms", "Restore time from cold storage (median, range of runs)"),
        ("cold-read", "read_mib", "MiB", "Bytes read from storage per restore (median)"),
    ]:
        fig, axes = plt.subplots(1, len(groups), figsize=(7 * len(groups), 0.45 * rows * 2 + 1.5), squeeze=False)
        for ax, (ws, entries) in zip(axes[0], groups.items()):
            reference = (entries[0]["distinct_mib"], "working set") if key == "read_mib" else None
            bars_by_variant(ax, entries, [ra_label(e) for e in entries], key,
                            f'{title}\n{ws} working set, {entries[0]["distinct_mib"]:.0f} MiB', unit, reference)
        save(fig, out_dir, stem, what)

    # Every cold pager variant against the File backend at the same readahead.
    fig, axes = plt.subplots(1, len(groups), figsize=(7 * len(groups), 0.45 * rows * 2 + 1.5), squeeze=False)
    for ax, (ws, entries) in zip(axes[0], groups.items()):
        names = [v["name"] for v in variants(entries[0]) if v["name"].startswith("pager")]
        height = 0.8 / len(entries)
        for i, e in enumerate(entries):
            by_name = {v["name"]: v for v in variants(e)}
            ys = [n + i * height for n, name in enumerate(names) if name in by_name]
            xs = [by_name[name]["ratio_vs_file_cold"] for name in names if name in by_name]
            ax.barh(ys, xs, height=height, label=ra_label(e))
        ax.set_yticks([n + height * (len(entries) - 1) / 2 for n in range(len(names))])
        ax.set_yticklabels(names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ratio = matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}x")
        ax.xaxis.set_major_formatter(ratio)
        ax.xaxis.set_minor_formatter(ratio)
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.axvline(1.0, color="black", linestyle="--", linewidth=1, label="file_cold")
        ax.set_xlabel("time / file_cold time at the same readahead (< 1: the pager is faster)")
        ax.set_title(f"Cold restore against the File backend\n{ws} working set", fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(axis="x", alpha=0.3, which="both")
    save(fig, out_dir, stem, "cold-vs-file")


def plot_latency(result, out_dir, stem):
    latency = result["fault_latency"]
    handlers = [h for h in ("minimal_handler", "pager_cold", "pager_warm") if h in latency]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.25
    for i, p in enumerate(("p50_us", "p99_us", "mean_us")):
        ax.bar([n + i * width for n in range(len(handlers))], [latency[h][p] for h in handlers], width, label=p)
    ax.set_xticks([n + width for n in range(len(handlers))])
    ax.set_xticklabels(handlers)
    ax.set_ylabel("µs")
    ax.set_title(f'Per-fault latency, {latency["pages_per_run"]} sequential touches per run', fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    save(fig, out_dir, stem, "latency")


def plot_tinyvmm(result, out_dir, stem):
    t = result["tinyvmm"]
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(variants(t)) + 1.5))
    bars_by_variant(ax, [t], [f'{t["guest_mib"]} MiB guest, {t["vcpus"]} vCPUs'], "ms",
                    "Restore through tinyvmm (median, range of runs)", "ms")
    save(fig, out_dir, stem, "tinyvmm-time")


def plot_fork(result, out_dir, stem):
    backends = {}
    for row in result["results"]:
        backends.setdefault(row["backend"], []).append(row)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in [(axes[0], "fork_ms_median", "fork time"),
                           (axes[1], "first_progress_ms_median", "time to the fork's first progress")]:
        for backend, rows in backends.items():
            rows = sorted(rows, key=lambda r: r["mem_mib"])
            ax.plot([r["mem_mib"] for r in rows], [r[key] for r in rows], marker="o", label=backend)
        ax.set_xscale("log", base=2)
        sizes = sorted({r["mem_mib"] for r in result["results"]})
        ax.set_xticks(sizes)
        ax.set_xticklabels([str(m) for m in sizes])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("guest memory (MiB)")
        ax.set_ylabel("ms (median)")
        ax.set_title(f'fork_bench: {title}, {result.get("forks", "?")} forks per size', fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    save(fig, out_dir, stem, "fork")


def plot_layers(result, out_dir, stem):
    entry = result["layers"]
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(variants(entry)) + 1.5))
    bars_by_variant(ax, [entry], [f'{entry["working_set"]} ({entry["distinct_mib"]:.0f} MiB)'], "ms",
                    f'A chain of {entry["chain_depth"]} against one file of its bytes (median, range of runs)', "ms")
    save(fig, out_dir, stem, "layers-time")


def plot_store(result, out_dir, stem):
    entry = result["store"]
    label = f'{entry["working_set"]} ({entry["distinct_mib"]:.0f} MiB), {entry["flavor"]}'
    height = 0.35 * len(variants(entry)) + 1.5
    fig, ax = plt.subplots(figsize=(9, height))
    file_cold = next((v["median_ms"] for v in variants(entry) if v["name"] == "file_cold"), None)
    bars_by_variant(ax, [entry], [label], "ms", "Restore from the object store, added latency per request "
                    "(median, range of runs)", "ms",
                    reference=(file_cold, "file_cold (local copy, page cache cold)") if file_cold else None)
    save(fig, out_dir, stem, "store-time")
    fig, ax = plt.subplots(figsize=(9, height))
    bars_by_variant(ax, [entry], [label], "store_mib", "Bytes fetched from the store per restore (median)", "MiB",
                    reference=(entry["distinct_mib"], "the working set"))
    save(fig, out_dir, stem, "store-bytes")


def plot_fork_cycle(result, out_dir, stem):
    rows = sorted(result["cycle"], key=lambda r: r["mem_mib"])
    sizes = [r["mem_mib"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in [("fork_running_ms", "fork of a running fork"), ("standby_ms", "standby of a fork")]:
        axes[0].plot(sizes, [r[key] for r in rows], marker="o", label=label)
    if all("fork_written_mib" in r for r in rows):
        axes[1].plot(sizes, [r["fork_written_mib"] for r in rows], marker="o", label="written by the fork")
    axes[1].plot(sizes, [r["standby_written_mib"] for r in rows], marker="o", label="written by its standby")
    axes[1].plot(sizes, sizes, linestyle="--", color="gray", label="its memory")
    if rows and "dirty_fraction_target" in rows[0]:
        fraction = rows[0]["dirty_fraction_target"]
        axes[1].plot(sizes, [fraction * m for m in sizes], linestyle=":", color="gray",
                     label=f"{fraction:.0%} of its memory (what it changed)")
    for ax, unit in [(axes[0], "ms"), (axes[1], "MiB")]:
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes)
        ax.set_xticklabels([str(m) for m in sizes])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("guest memory (MiB)")
        ax.set_ylabel(unit)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_title("fork_bench: the hot-pool cycle on a running fork", fontsize=10)
    axes[1].set_title("bytes each step writes", fontsize=10)
    save(fig, out_dir, stem, "fork-cycle")


def main():
    parser = argparse.ArgumentParser(description="SVG plots of restore_bench and fork_bench JSON output")
    parser.add_argument("inputs", nargs="+", help="restore_bench or fork_bench --json-out files")
    parser.add_argument("--out-dir", default=".", help="where the SVG files go (default: here)")
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    for path in args.inputs:
        with open(path) as f:
            result = json.load(f)
        stem = os.path.splitext(os.path.basename(path))[0]
        if result.get("benchmark") == "restore_bench":
            plots = {"restore": plot_restore, "cold": plot_cold, "fault_latency": plot_latency,
                     "tinyvmm": plot_tinyvmm, "layers": plot_layers, "store": plot_store}
            found = [key for key in plots if key in result]
            for key in found:
                plots[key](result, args.out_dir, stem)
        elif isinstance(result.get("results"), list) and all("backend" in r for r in result["results"]):
            found = ["fork"]
            plot_fork(result, args.out_dir, stem)
            if result.get("cycle"):
                plot_fork_cycle(result, args.out_dir, stem)
        else:
            sys.exit(f"{path}: neither restore_bench nor fork_bench output")
        if not found:
            print(f"{path}: no section to plot", file=sys.stderr)


if __name__ == "__main__":
    main()
