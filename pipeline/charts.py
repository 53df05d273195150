"""The report's charts, drawn with matplotlib's Agg backend (no display needed).

Every chart colours a protection the same way (`protection_color`), labels its
axes with units, carries a legend, and marks an empty slot with the reason it
is empty instead of leaving a gap that reads as zero.
"""

from __future__ import annotations

import io
import math
import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: the report renders on headless machines and in CI

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from pipeline import collect, compare  # noqa: E402
from pipeline.collect import Collection  # noqa: E402

DPI = 110
# Okabe-Ito colours: distinguishable with colour-vision deficiencies and in greyscale print.
_FIXED_COLORS = {
    "none": "#4d4d4d",
    "dp": "#0072b2",
    "adv": "#e69f00",
    "adv-retrain": "#d55e00",
    "anomaly": "#009e73",
    "he": "#cc79a7",
}
_SPARE_COLORS = ("#56b4e9", "#f0e442", "#8c564b", "#17becf", "#7f7f7f")
_GAIN_MARKERS = {"robustness": "o", "privacy": "^", "poisoning": "D"}
_GAIN_TEXT = {
    "robustness": "robust accuracy (PGD, smallest ε)",
    "privacy": "membership-inference advantage, reduced",
    "poisoning": "accuracy under poisoning, vs unfiltered",
}
_MISSING_COLOR = "0.45"


def protection_color(prot: str) -> str:
    """The protection's colour in every chart; unknown names get a stable spare colour."""
    if prot in _FIXED_COLORS:
        return _FIXED_COLORS[prot]
    return _SPARE_COLORS[zlib.crc32(prot.encode()) % len(_SPARE_COLORS)]


def _gid(prot: str) -> str:
    # Tags each protection's artists, so tests can check colours across charts.
    return f"protection:{prot}"


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def save(fig: Figure, path: Path) -> bytes:
    """Writes the chart as PNG and returns the bytes (embedded in the HTML page)."""
    data = png_bytes(fig)
    path.write_bytes(data)
    plt.close(fig)
    return data


# --- layout helpers -----------------------------------------------------------------


def _panels(n: int, title: str, width: float = 6.4, height: float = 3.9):
    ncols = min(max(n, 1), 2)
    nrows = math.ceil(max(n, 1) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width * ncols, height * nrows + 0.9), squeeze=False
    )
    fig.suptitle(title, fontsize=13, fontweight="bold")
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[: max(n, 1)]


def _protection_legend(
    fig: Figure, prots: list[str], extra: list | None = None, title: str = "protection"
) -> None:
    handles = [Patch(color=protection_color(p), label=p) for p in prots] + list(extra or [])
    fig.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=min(len(handles), 10),
        frameon=False,
        fontsize=9,
        title=title,
        title_fontsize=9,
    )


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.3")
    ax.set_xticks([])
    ax.set_yticks([])


def _missing_mark(ax, x: float, reason: str) -> None:
    # At the foot of the slot, in axes units so it sits right on log scales too.
    ax.text(
        x,
        0.02,
        reason,
        rotation=90,
        ha="center",
        va="bottom",
        fontsize=7,
        color=_MISSING_COLOR,
        transform=blended_transform_factory(ax.transData, ax.transAxes),
    )


def _log_axis(ax, values: list[float], axis: str = "y") -> None:
    """Log scale with plain-number labels; the 2 and 5 ticks are labelled on short ranges."""
    values = [v for v in values if v and v > 0]
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    if not values:
        return
    lo, hi = min(values) / 2.2, max(values) * 2.2
    (ax.set_ylim if axis == "y" else ax.set_xlim)(lo, hi)
    short = math.log10(hi / lo) < 2.5

    def label(value, _pos):
        mantissa = value / 10 ** math.floor(math.log10(value) + 1e-9)
        return (
            f"{value:g}" if round(mantissa, 6) == 1 or (short and round(mantissa) in (2, 5)) else ""
        )

    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(FuncFormatter(label))
    target.set_minor_formatter(FuncFormatter(label))


def _finish(fig: Figure) -> Figure:
    fig.tight_layout(rect=(0, 0.02, 1, 0.96))
    return fig


# --- 1: accuracy per epoch ------------------------------------------------------------


def accuracy_per_epoch(coll: Collection) -> Figure:
    """Test accuracy per epoch, one line per protection, one panel per data set."""
    datasets, prots = collect.datasets(coll), collect.protections(coll)
    fig, axes = _panels(len(datasets), "Test accuracy per epoch")
    markers = ("o", "s", "^", "D", "v")
    devices = sorted({r.device for r in coll.runs if r.finished})
    multi_device = len(devices) > 1
    for ax, dataset in zip(axes, datasets, strict=False):
        drawn = False
        for prot in prots:
            for run in collect.runs_of(coll, dataset, prot):
                if not run.history:
                    continue
                drawn = True
                style = {"color": protection_color(prot), "linewidth": 1.6, "gid": _gid(prot)}
                if multi_device and run.device in devices:
                    style.update(marker=markers[devices.index(run.device) % 5], markevery=5, ms=4)
                for phase, linestyle in (("train", "-"), ("retrain", "--")):
                    # The retraining phase continues from the last training epoch, so join them.
                    points = [e for e in run.history if e.get("phase", "train") == phase]
                    if phase == "retrain" and points:
                        before = [e for e in run.history if e["epoch"] < points[0]["epoch"]]
                        points = before[-1:] + points
                    if points:
                        ax.plot(
                            [e["epoch"] for e in points],
                            [100 * e["test_accuracy"] for e in points],
                            linestyle=linestyle,
                            **style,
                        )
                best = (run.metrics or {}).get("best_epoch")
                chosen = [e for e in run.history if e["epoch"] == best]
                if chosen:
                    ax.plot(
                        best,
                        100 * chosen[0]["test_accuracy"],
                        "o",
                        color=protection_color(prot),
                        markeredgecolor="black",
                        ms=6,
                        zorder=5,
                    )
        ax.set_title(dataset)
        if not drawn:
            _empty(ax, "no run with a history yet")
            continue
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    extra = [
        Line2D([], [], color="0.3", linestyle="--", label="retraining phase"),
        Line2D(
            [], [], color="0.5", marker="o", markeredgecolor="black", ls="", label="deployed epoch"
        ),
    ]
    if multi_device:
        extra += [
            Line2D([], [], color="0.3", marker=markers[i % 5], label=f"trained on {d}")
            for i, d in enumerate(devices)
        ]
    _protection_legend(fig, prots, extra)
    return _finish(fig)


# --- 2: training time ----------------------------------------------------------------------


def training_time(coll: Collection) -> Figure:
    """Training time per protection and training device, log scale, one panel per data set."""
    datasets, prots = collect.datasets(coll), collect.protections(coll)
    fig, axes = _panels(len(datasets), "Training time per protection and device")
    devices = sorted({r.device for r in coll.runs if r.finished}) or ["(no finished run)"]
    width = 0.8 / max(len(prots), 1)
    for ax, dataset in zip(axes, datasets, strict=False):
        ax.set_title(dataset)
        ax.set_yscale("log")
        ax.set_axisbelow(True)
        seconds_drawn = []
        for gi, device in enumerate(devices):
            for pi, prot in enumerate(prots):
                x = gi + (pi - (len(prots) - 1) / 2) * width
                run = next(
                    (
                        r
                        for r in collect.runs_of(coll, dataset, prot)
                        if r.finished and r.device == device
                    ),
                    None,
                )
                if run is None:
                    reason = collect.missing_run_reason(coll, dataset, prot)
                    if reason == "not run" and collect.runs_of(coll, dataset, prot):
                        reason = "not run on this device"
                    _missing_mark(ax, x, reason)
                    continue
                seconds = compare.training_seconds(run.metrics)
                seconds_drawn.append(seconds)
                ax.bar(x, seconds, width * 0.92, color=protection_color(prot), gid=_gid(prot))
                ax.annotate(
                    _short_seconds(seconds),
                    (x, seconds),
                    xytext=(0, 2),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
        ax.set_xticks(range(len(devices)), devices)
        ax.set_xlim(-0.5, len(devices) - 0.5)
        ax.set_xlabel("training device")
        ax.set_ylabel("training time (s, log scale)")
        _log_axis(ax, seconds_drawn)
        ax.grid(axis="y", which="both", alpha=0.3)
    _protection_legend(fig, prots)
    return _finish(fig)


def _short_seconds(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.3g} s"


# --- 3: inference time ---------------------------------------------------------------------


def inference_groups(coll: Collection, dataset: str) -> list[dict]:
    """The x groups of one inference panel: every board column, then HE per training device."""
    groups = [
        {"label": f"{dev}\n{target}" + (f"\n({backend})" if backend else ""), "column": col}
        for col in collect.board_columns(coll)
        for dev, target, backend in [col]
    ]
    he_runs = [r for r in collect.runs_of(coll, dataset, "he") if he_latency(r)]
    for device in sorted({r.device for r in he_runs}):
        groups.append({"label": f"{device}\nHE (CKKS, TenSEAL)", "device": device})
    return groups


def _short_ms(ms: float) -> str:
    return f"{ms / 1000:.3g} s" if ms >= 1000 else f"{ms:.3g} ms"


def he_latency(run) -> dict:
    latency = ((run.metrics or {}).get("protection") or {}).get("latency_ms")
    return latency if isinstance(latency, dict) else {}


def inference_latency(coll: Collection) -> Figure:
    """Latency per data point (p50 bars, p90/p99 whiskers) per protection and device."""
    datasets, prots = collect.datasets(coll), collect.protections(coll)
    board_prots = [p for p in prots if p != "he"]
    slot_width = 0.8 / max(len(board_prots), 1)
    panels = {d: inference_groups(coll, d) for d in datasets}
    slots = max(
        (
            sum(2 if "device" in g else len(board_prots) for g in groups)
            for groups in panels.values()
        ),
        default=1,
    )
    # One panel per row: groups of bars need the page's width.
    fig, axes = plt.subplots(
        max(len(datasets), 1),
        1,
        figsize=(
            max(8.0, 0.32 * slots + 0.9 * len(max(panels.values(), key=len, default=[]))),
            4.2 * max(len(datasets), 1) + 0.9,
        ),
        squeeze=False,
    )
    fig.suptitle("Inference time per data point (batch size 1)", fontsize=13, fontweight="bold")
    axes = list(axes.flat)
    for ax, dataset in zip(axes, datasets, strict=False):
        ax.set_title(dataset)
        groups = panels[dataset]
        if not groups:
            _empty(
                ax,
                "no benchmark results yet: run devices/run_bench.py on an export folder\n"
                "(make grid does it for this machine) and copy results/ from the boards here",
            )
            continue
        ax.set_yscale("log")
        ax.set_axisbelow(True)
        centres, drawn = [], []
        x0 = 0.0
        for group in groups:
            if "device" in group:
                he = _he_slots(coll, dataset, group["device"])
                for si, (kind, value) in enumerate(he):
                    x = x0 + si * slot_width
                    ax.bar(
                        x,
                        value,
                        slot_width * 0.92,
                        color=protection_color("he"),
                        gid=_gid("he"),
                        hatch="///" if kind == "plaintext" else None,
                        edgecolor="white",
                    )
                    ax.annotate(
                        _short_ms(value),
                        (x, value),
                        xytext=(0, 2),
                        textcoords="offset points",
                        ha="center",
                        fontsize=7,
                    )
                    drawn.append(value)
                n = len(he)
            else:
                for si, prot in enumerate(board_prots):
                    x = x0 + si * slot_width
                    found = collect.board_result(coll, dataset, prot, group["column"])
                    if isinstance(found, str):
                        _missing_mark(ax, x, found)
                        continue
                    lat = found.latency_ms
                    p50, p90, p99 = (float(lat[k]) for k in ("p50", "p90", "p99"))
                    ax.bar(x, p50, slot_width * 0.92, color=protection_color(prot), gid=_gid(prot))
                    ax.vlines(x, p50, p99, color="black", linewidth=0.8)
                    ax.plot([x], [p90], marker="_", color="black", ms=8, mew=1.2)
                    ax.plot([x], [p99], marker="^", color="black", ms=3.5)
                    drawn += [p50, p99]
                n = len(board_prots)
            centres.append(x0 + (n - 1) * slot_width / 2)
            x0 += n * slot_width + 0.5
        ax.set_xticks(centres, [g["label"] for g in groups], fontsize=8)
        ax.set_xlim(-slot_width, x0 - 0.5)
        ax.set_xlabel("device, artifact and runtime")
        ax.set_ylabel("latency per data point (ms, log scale)")
        _log_axis(ax, drawn)
        ax.grid(axis="y", which="both", alpha=0.3)
    extra = [
        Line2D([], [], color="black", marker="_", ls="", ms=8, mew=1.2, label="p90"),
        Line2D([], [], color="black", marker="^", ls="", ms=4, label="p99 (bar: p50)"),
        Patch(
            facecolor=protection_color("he"),
            hatch="///",
            edgecolor="white",
            label="HE model on plaintext",
        ),
    ]
    _protection_legend(fig, prots, extra)
    return _finish(fig)


def _he_slots(coll: Collection, dataset: str, device: str) -> list[tuple[str, float]]:
    """(kind, ms per sample) for the encrypted and plaintext inference of an HE run."""
    run = next(
        r for r in collect.runs_of(coll, dataset, "he") if r.device == device and he_latency(r)
    )
    latency = he_latency(run)
    return [
        (kind, float(latency[kind]))
        for kind in ("total", "plaintext")
        if isinstance(latency.get(kind), int | float) and latency[kind] > 0
    ]


# --- 5: cost of protection -----------------------------------------------------------------


def cost_runs(coll: Collection) -> list[compare.Cost]:
    """Costs shown in chart 5: HE is left out, its gain (private inputs) is not on these axes."""
    return [c for c in compare.costs(coll.runs) if c.run.prot != "he"]


def protection_cost(coll: Collection) -> Figure:
    """Each protection's accuracy and training-time change against its gains, on one figure."""
    prots = [p for p in collect.protections(coll) if p not in (compare.BASELINE, "he")]
    costs = cost_runs(coll)
    datasets = [d for d in collect.datasets(coll) if any(c.run.dataset == d for c in costs)]
    rows = max(len(datasets), 1)
    fig, axes = plt.subplots(rows, 2, figsize=(12.8, 4.3 * rows + 0.9), squeeze=False, sharey="row")
    fig.suptitle(
        "Cost of protection against what it buys (vs the unprotected run)",
        fontsize=13,
        fontweight="bold",
    )
    for row, dataset in zip(axes, datasets or [None], strict=False):
        left, right = row
        mine = [c for c in costs if c.run.dataset == dataset]
        for cost in mine:
            color = protection_color(cost.run.prot)
            for kind, gain in cost.gains_pp.items():
                marker = _GAIN_MARKERS[kind]
                points = [(left, cost.accuracy_change_pp)]
                if cost.train_time_ratio:
                    points.append((right, cost.train_time_ratio))
                for ax, x in points:
                    ax.scatter(
                        x,
                        gain,
                        color=color,
                        gid=_gid(cost.run.prot),
                        marker=marker,
                        s=60,
                        zorder=3,
                        edgecolors="black",
                        linewidths=0.4,
                    )
                    ax.annotate(
                        cost.run.prot,
                        (x, gain),
                        xytext=(6, 3),
                        textcoords="offset points",
                        fontsize=7,
                        color="0.25",
                    )
        for ax in row:
            ax.axhline(0, color="0.5", linewidth=0.8)
            ax.grid(alpha=0.3)
        left.axvline(0, color="0.5", linewidth=0.8)
        right.axvline(1, color="0.5", linewidth=0.8)
        _log_axis(right, [c.train_time_ratio for c in mine if c.train_time_ratio] + [1.0], "x")
        right.xaxis.set_major_formatter(FuncFormatter(_times(right.xaxis.get_major_formatter())))
        right.xaxis.set_minor_formatter(FuncFormatter(_times(right.xaxis.get_minor_formatter())))
        left.set_xlabel("clean test accuracy change (percentage points)")
        right.set_xlabel("training time relative to unprotected (×, log scale)")
        left.set_ylabel("gain (percentage points)")
        suffix = f"{dataset}: " if dataset else ""
        left.set_title(f"{suffix}accuracy cost")
        right.set_title(f"{suffix}training-time cost")
        if not mine:
            for ax in row:
                _empty(ax, "no protected run with an unprotected baseline yet")
    extra = [
        Line2D([], [], color="0.4", marker=m, ls="", markeredgecolor="black", label=_GAIN_TEXT[k])
        for k, m in _GAIN_MARKERS.items()
    ]
    _protection_legend(fig, prots, extra, "protection (colour) and what it buys (marker)")
    return _finish(fig)


def _times(formatter):
    def label(value, pos):
        text = formatter(value, pos)
        return f"{text}×" if text else ""

    return label


CHARTS = {
    "accuracy_per_epoch": accuracy_per_epoch,
    "training_time": training_time,
    "inference_latency": inference_latency,
    "protection_cost": protection_cost,
}
