"""Renders the comparison of protections as one self-contained HTML page, Markdown and PNG charts.

  python -m pipeline.report                       # reads runs/, exports/, results/
  make report RUNS=runs RESULTS=results REPORT=report

Writes report/index.html (charts embedded as base64 PNG, CSS inline: one file
to mail or archive), report/report.md with the same tables, and each chart as
report/<chart>.png. Cells without a value say why: not run, not finished, not
applicable, not evaluated, not exported, board not benchmarked. Malformed
input files are listed by name and left out.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime
import html
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline import charts, collect, compare
from pipeline.collect import Collection, Run
from pipeline.errors import OneLineParser, UsageError, run_cli

log = logging.getLogger(__name__)

HTML_FILE = "index.html"
MARKDOWN_FILE = "report.md"

_CAPTIONS = {
    "accuracy_per_epoch": (
        "1. Test accuracy per epoch",
        "One line per protection, one panel per data set. Dashed: the retraining phase "
        "of adv-retrain. The outlined dot marks the deployed epoch (best validation accuracy).",
    ),
    "training_time": (
        "2. Training time",
        "Total training time per protection and training device, log scale: the sum of "
        "epoch times, plus the anomaly filter's scoring of the training set; "
        "post-training evaluations are not included.",
    ),
    "inference_latency": (
        "3. Inference time per data point",
        "Batch size 1. Bars: median (p50) latency; whiskers: p90 (tick) and p99 (triangle). "
        "HE groups: encrypted inference per sample (encrypt, evaluate, decrypt) and the same "
        "model on plaintext, measured on the training device.",
    ),
    "protection_cost": (
        "5. Cost of protection",
        "Each protected run against the unprotected run of its data set: left, change in "
        "clean test accuracy; right, training-time ratio; up, what the protection buys "
        "(robust accuracy under PGD at the smallest ε both were evaluated at, reduction of the "
        "membership-inference advantage, accuracy regained under poisoning). HE is absent: "
        "it protects inference inputs, see the HE table.",
    ),
}


# --- cells and tables -------------------------------------------------------------------


@dataclasses.dataclass
class Cell:
    text: str
    missing: bool = False  # text is the reason the value is absent
    title: str = ""  # detail shown on hover in the page
    span: int = 1  # columns the cell covers in the page; Markdown repeats it


def missing(reason: str, span: int = 1) -> Cell:
    return Cell(reason, missing=True, span=span)


@dataclasses.dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Cell]]
    note: str = ""


def _pct(x) -> str:
    return f"{100 * x:.1f} %"


def _pp(x: float) -> str:
    return f"{x:+.1f} pp"


def _seconds(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:.2f} h"
    if s >= 120:
        return f"{s / 60:.1f} min"
    return f"{s:.3g} s"


def _bytes(n: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def _ms(x: float) -> str:
    return f"{x:.3g} ms"


def _num(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- 4: the protection table -------------------------------------------------------------


def protection_table(coll: Collection, dataset: str) -> Table:
    """Clean and robust accuracy, privacy, filtering, time, size and agreement per protection."""
    runs = [r for r in coll.runs if r.dataset == dataset and r.finished]
    attacks = sorted(
        {a for r in runs for a in compare.robust_accuracies(r.metrics)}, key=_attack_order
    )
    columns = [
        "protection",
        "trained on",
        "clean accuracy",
        *[f"accuracy under {a}" for a in attacks],
        "one-pixel attack success",
        "membership AUC",
        "membership advantage",
        "ε",
        "δ",
        "filtered records",
        "training time",
        "weights (float32)",
        "int8 model",
        "artifact agreement (lowest)",
    ]
    rows = []
    for prot in collect.protections(coll):
        found = [r for r in collect.runs_of(coll, dataset, prot) if r.finished]
        if not found:
            reason = collect.missing_run_reason(coll, dataset, prot)
            rows.append([Cell(prot), missing(reason, span=len(columns) - 1)])
            continue
        for run in found:
            rows.append([Cell(prot), Cell(run.device), *_protection_cells(coll, run, attacks)])
    return Table(f"Protections on {dataset}", columns, rows)


def _attack_order(label: str):
    name, _, eps = label.partition(" ε=")
    return name.split("-")[0], float(eps) if eps else 0.0, name


def _protection_cells(coll: Collection, run: Run, attacks: list[str]) -> list[Cell]:
    m = run.metrics
    prot_metrics = m.get("protection") or {}
    cells = []

    clean = Cell(_pct(m["test_accuracy"]))
    if run.prot == "he" and _num(prot_metrics.get("encrypted_accuracy")):
        clean.text += f" (encrypted: {_pct(prot_metrics['encrypted_accuracy'])})"
    cells.append(clean)

    robust = compare.robust_accuracies(m)
    for attack in attacks:
        cells.append(Cell(_pct(robust[attack])) if attack in robust else missing("not evaluated"))
    one_pixel = (m.get("robustness") or {}).get("one_pixel") or {}
    cells.append(
        Cell(_pct(one_pixel["success_rate"]), title=f"{one_pixel.get('samples', '?')} samples")
        if _num(one_pixel.get("success_rate"))
        else missing("not evaluated")
    )

    mia = m.get("membership_inference") or {}
    for key in ("auc", "attacker_advantage"):
        cells.append(Cell(f"{mia[key]:.3f}") if _num(mia.get(key)) else missing("not evaluated"))

    if run.prot == "dp":
        eps, delta = prot_metrics.get("epsilon"), prot_metrics.get("delta")
        approx = "≈ " if prot_metrics.get("epsilon_is_approximation") else ""
        detail = ", ".join(
            f"{k} {prot_metrics[k]}"
            for k in ("accountant", "sampling", "noise_multiplier", "l2_norm_clip")
            if k in prot_metrics
        )
        cells.append(
            Cell(f"{approx}{eps:.3g}", title=detail) if _num(eps) else missing("not recorded")
        )
        cells.append(Cell(f"{delta:.1e}") if _num(delta) else missing("not recorded"))
    else:
        cells += [missing("not applicable")] * 2

    if run.prot == "anomaly":
        removed = prot_metrics.get("removed_count")
        # Precision and recall are measured on injected records; without any they mean nothing.
        injected = prot_metrics.get("injected_count")
        parts = [
            f"{k} {prot_metrics[k]:.2f}"
            for k in ("precision", "recall")
            if _num(prot_metrics.get(k)) and _num(injected) and injected > 0
        ]
        text = f"{removed}" + (f" ({', '.join(parts)})" if parts else "")
        cells.append(
            Cell(text, title=str(prot_metrics.get("filter", "")))
            if _num(removed)
            else missing("not recorded")
        )
    else:
        cells.append(missing("not applicable"))

    cells.append(
        Cell(
            _seconds(compare.training_seconds(m)),
            title=f"{m.get('epochs_trained', '?')} epochs, {m['train_seconds']:.1f} s of epochs",
        )
    )
    params = m.get("parameter_count")
    cells.append(
        Cell(_bytes(4 * params), title=f"{params:,} parameters")
        if _num(params)
        else missing("not recorded")
    )

    exports = [e for e in coll.exports if e.run == run.name]
    if run.prot == "he":
        cells += [missing("not applicable")] * 2
        return cells
    int8 = next((e for e in exports if e.target == "tflite-int8"), None)
    size = int8.manifest.get("model_size_bytes") if int8 else None
    cells.append(Cell(_bytes(size)) if _num(size) else missing("not exported"))
    agreements = [
        (e.manifest["verification"]["agreement"], e.target)
        for e in exports
        if _num((e.manifest.get("verification") or {}).get("agreement"))
    ]
    if agreements:
        low, target = min(agreements)
        detail = ", ".join(f"{t} {_pct(a)}" for a, t in sorted(agreements, key=lambda x: x[1]))
        cells.append(Cell(f"{_pct(low)} ({target})", title=detail))
    else:
        cells.append(missing("not exported"))
    return cells


# --- tables behind the charts ------------------------------------------------------------


def inference_table(coll: Collection, dataset: str) -> Table:
    columns = collect.board_columns(coll)
    headers = [f"{d} · {t}" + (f" ({b})" if b else "") for d, t, b in columns]
    rows = []
    for prot in collect.protections(coll) if columns else []:
        row = [Cell(prot)]
        for column in columns:
            found = collect.board_result(coll, dataset, prot, column)
            if isinstance(found, str):
                row.append(missing(found))
                continue
            lat = found.latency_ms
            row.append(
                Cell(
                    f"{_ms(lat['p50'])} (p99 {_ms(lat['p99'])}), acc {_pct(found.accuracy)}",
                    title=f"{found.path.name}: p90 {_ms(lat['p90'])}, "
                    f"{found.data.get('samples', '?')} samples",
                )
            )
        rows.append(row)
    note = "" if columns else "No board results yet."
    return Table(
        f"Inference on {dataset}: p50 latency per data point and accuracy",
        ["protection", *headers],
        rows,
        note,
    )


def he_table(coll: Collection) -> Table:
    columns = [
        "data set",
        "trained on",
        "plaintext accuracy",
        "encrypted accuracy",
        "agreement",
        "encrypt",
        "evaluate",
        "decrypt",
        "encrypted total",
        "plaintext",
        "slowdown",
        "ciphertext",
        "keys",
        "parameters",
        "security",
    ]
    rows = []
    for dataset in collect.datasets(coll):
        if "he" not in collect.protections(coll):
            continue
        found = [r for r in collect.runs_of(coll, dataset, "he") if r.finished]
        if not found:
            reason = collect.missing_run_reason(coll, dataset, "he")
            rows.append([Cell(dataset), missing(reason, span=len(columns) - 1)])
        for run in found:
            rows.append(
                [Cell(dataset), Cell(run.device), *_he_cells(run.metrics.get("protection") or {})]
            )
    return Table("Encrypted inference (PROT=he) against the same model on plaintext", columns, rows)


def _he_cells(p: dict) -> list[Cell]:
    def get(value, fmt):
        return Cell(fmt(value)) if _num(value) else missing("not recorded")

    lat = p.get("latency_ms") or {}
    cells = [
        get(p.get("plaintext_accuracy"), _pct),
        get(p.get("encrypted_accuracy"), _pct),
        get(p.get("agreement"), _pct),
        *[get(lat.get(k), _ms) for k in ("encrypt", "evaluate", "decrypt", "total", "plaintext")],
    ]
    total, plain = lat.get("total"), lat.get("plaintext")
    cells.append(
        Cell(f"{total / plain:,.0f} ×")
        if _num(total) and _num(plain) and plain > 0
        else missing("not recorded")
    )
    cells.append(get(p.get("ciphertext_bytes"), _bytes))
    keys = p.get("keys_bytes") or {}
    key_sizes = [v for v in keys.values() if _num(v)]
    cells.append(
        Cell(
            _bytes(sum(key_sizes)),
            title=", ".join(f"{k} {_bytes(v)}" for k, v in keys.items() if _num(v)),
        )
        if key_sizes
        else missing("not recorded")
    )
    scheme = [
        str(p[k])
        for k in ("scheme", "poly_modulus_degree", "coeff_mod_bit_sizes", "global_scale_bits")
        if k in p
    ]
    cells.append(Cell(", ".join(scheme)) if scheme else missing("not recorded"))
    bits = p.get("security_bits")
    cells.append(Cell(f"{bits}-bit") if _num(bits) else missing("not recorded"))
    return cells


def cost_table(coll: Collection) -> Table:
    columns = [
        "data set",
        "protection",
        "trained on",
        "accuracy change",
        "training time",
        "robustness gain",
        "privacy gain",
        "poisoning gain",
    ]
    rows = []
    for run in sorted(
        (r for r in coll.runs if r.finished and r.prot not in (compare.BASELINE, "he")),
        key=lambda r: (r.dataset, compare.protection_sort_key(r.prot)),
    ):
        head = [Cell(run.dataset), Cell(run.prot), Cell(run.device)]
        baseline = compare.baseline_for(run, coll.runs)
        if baseline is None:
            reason = collect.missing_run_reason(coll, run.dataset, compare.BASELINE)
            rows.append([*head, missing(f"baseline {reason}", span=len(columns) - 3)])
            continue
        cost = compare.cost_of(run, baseline)
        gains = cost.gains_pp
        robust = (
            Cell(_pp(gains["robustness"]), title=cost.robustness_attack)
            if "robustness" in gains
            else missing("not evaluated")
        )
        if "robustness" in gains:
            robust.text += f" ({cost.robustness_attack})"
        poisoning = (
            Cell(_pp(gains["poisoning"]))
            if "poisoning" in gains
            else missing("not applicable" if run.prot != "anomaly" else "no injected records")
        )
        rows.append(
            [
                *head,
                Cell(_pp(cost.accuracy_change_pp)),
                Cell(f"{cost.train_time_ratio:.2f} ×")
                if cost.train_time_ratio
                else missing("not recorded"),
                robust,
                Cell(_pp(gains["privacy"])) if "privacy" in gains else missing("not evaluated"),
                poisoning,
            ]
        )
    return Table(
        "Cost and gain against the unprotected run",
        columns,
        rows,
        "HE is not in this table: what it buys is private inference inputs; see its own table.",
    )


def exports_table(coll: Collection) -> Table:
    columns = [
        "run",
        "target",
        "runtime",
        "size",
        "agreement",
        "accuracy",
        "Keras accuracy",
        "transferred attacks: artifact / Keras",
    ]
    rows = []
    for e in sorted(coll.exports, key=lambda e: (e.run, e.target)):
        v = e.manifest.get("verification") or {}
        size = e.manifest.get("model_size_bytes")
        attacks = [
            f"{compare.attack_label(a)}: {_pct(a['artifact_accuracy'])} / {_pct(a['keras_accuracy'])}"
            for a in v.get("robustness") or []
            if isinstance(a, dict)
            and _num(a.get("artifact_accuracy"))
            and _num(a.get("keras_accuracy"))
        ]
        rows.append(
            [
                Cell(e.run),
                Cell(e.target),
                Cell(str(v["runtime"])) if v.get("runtime") else missing("not verified"),
                Cell(_bytes(size)) if _num(size) else missing("not recorded"),
                Cell(_pct(v["agreement"])) if _num(v.get("agreement")) else missing("not verified"),
                Cell(_pct(v["accuracy"])) if _num(v.get("accuracy")) else missing("not verified"),
                Cell(_pct(v["keras_accuracy"]))
                if _num(v.get("keras_accuracy"))
                else missing("not verified"),
                Cell("; ".join(attacks)) if attacks else missing("not evaluated"),
            ]
        )
    note = "" if rows else "No export folders found."
    return Table("Exported artifacts, verified on this machine", columns, rows, note)


def machines_table(coll: Collection) -> Table:
    seen: dict[tuple[str, str], list[str]] = {}
    for run in coll.runs:
        host = (run.metrics or {}).get("host") or {}
        seen.setdefault(
            (run.device, "training"),
            [
                str(host.get("host", "")),
                str(host.get("cpu", "")),
                str(host.get("board") or ""),
                ", ".join(host.get("gpus") or []),
                str(host.get("os", "")),
                "",
            ],
        )
    for r in coll.results:
        dev = r.data.get("device") or {}
        runtime = r.data.get("runtime") or {}
        key = (r.device_label, "benchmark")
        entry = seen.setdefault(
            key,
            [
                str(dev.get("host", "")),
                str(dev.get("cpu", "")),
                str(dev.get("board") or ""),
                "",
                str(dev.get("os", "")),
                "",
            ],
        )
        name = f"{runtime.get('name', '?')} {runtime.get('version', '')}".strip()
        entry[5] = ", ".join(sorted(set(filter(None, [*entry[5].split(", "), name]))))
    rows = [
        [Cell(label), Cell(role), *[Cell(v) if v else missing("not recorded") for v in values]]
        for (label, role), values in sorted(seen.items())
    ]
    columns = ["device label", "role", "host", "CPU", "board", "GPUs", "OS", "runtimes"]
    for row in rows:  # a training machine has no benchmark runtimes, a board no recorded GPUs
        if row[1].text == "training":
            row[7] = missing("not applicable")
        else:
            row[5] = missing("not recorded")
    return Table("Machines", columns, rows)


def grid_table(coll: Collection) -> Table:
    """Steps that did not complete, one row per step, target and message (runs listed)."""
    grouped: dict[tuple, list[str]] = {}
    for s in coll.grid_steps:
        if s.get("status") in ("done", "skipped"):
            continue
        run = str(s.get("run") or "")
        # Messages name their run's folders; without the name, one message covers all runs.
        message = str(s.get("message") or "").removeprefix("error: ")
        message = message.replace(run, "<run>") if run else message
        key = (*(str(s.get(k) or "") for k in ("step", "target", "status")), message)
        grouped.setdefault(key, []).append(run)
    columns = ["step", "target", "status", "runs", "message"]
    rows = [
        [Cell(step), Cell(target), Cell(status), Cell(", ".join(names)), Cell(message)]
        for (step, target, status, message), names in grouped.items()
    ]
    return Table("Grid steps that did not complete", columns, rows)


def skipped_table(coll: Collection) -> Table:
    rows = [[Cell(str(s.path)), Cell(s.reason)] for s in coll.skipped]
    return Table("Skipped input files", ["file", "problem"], rows)


# --- rendering ----------------------------------------------------------------------------


@dataclasses.dataclass
class Report:
    charts: dict[str, bytes]  # name -> PNG
    sections: list  # ("chart", name) | ("table", Table) | ("heading", text) | ("text", text)
    summary: str
    skipped: list


def build(coll: Collection, out_dir: Path) -> Report:
    """Draws the charts into out_dir and lays out the sections of the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = {
        name: charts.save(draw(coll), out_dir / f"{name}.png")
        for name, draw in charts.CHARTS.items()
    }
    datasets = collect.datasets(coll)
    sections: list = []
    if coll.skipped:
        sections.append(("table", skipped_table(coll)))
    sections += [("chart", "accuracy_per_epoch"), ("chart", "training_time")]
    sections.append(("chart", "inference_latency"))
    sections += [("table", inference_table(coll, d)) for d in datasets]
    sections.append(("heading", "4. Protections per data set"))
    sections += [("table", protection_table(coll, d)) for d in datasets]
    sections += [("chart", "protection_cost"), ("table", cost_table(coll))]
    if "he" in collect.protections(coll):
        sections.append(("table", he_table(coll)))
    sections += [("table", exports_table(coll)), ("table", machines_table(coll))]
    if any(s.get("status") not in ("done", "skipped") for s in coll.grid_steps):
        sections.append(("table", grid_table(coll)))
    sections.append(("heading", "How to read this report"))
    sections.append(("text", _DEFINITIONS))
    finished = [r for r in coll.runs if r.finished]
    summary = (
        f"{len(finished)} finished runs ({len(coll.runs) - len(finished)} unfinished) on "
        f"{', '.join(datasets) or 'no data set'}; {len(coll.results)} board results from "
        f"{len({r.device_label for r in coll.results})} devices; {len(coll.exports)} exports"
        + (f"; {len(coll.skipped)} malformed files skipped" if coll.skipped else "")
        + "."
    )
    return Report(pngs, sections, summary, coll.skipped)


_DEFINITIONS = [
    "Clean accuracy: top-1 accuracy of the deployed model on the test split.",
    "Accuracy under an attack: on adversarial test examples crafted against the model itself "
    "(white box, L∞ radius ε on inputs scaled to [0, 1]).",
    "Membership AUC and advantage: the strongest of a threshold and a logistic-regression "
    "membership-inference attack; advantage is max(TPR − FPR), 0 means no leak.",
    "ε, δ: the differential-privacy guarantee of DP-SGD training; ≈ marks an approximation "
    "(shuffled batches accounted as Poisson sampling).",
    "pp: percentage points. Latencies are per data point at batch size 1.",
    "Missing values say why: not run, not finished, training failed, not available (the grid "
    "could not run the step here), not applicable, not evaluated, not exported, "
    "board not benchmarked.",
]


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
       max-width: 1600px; padding: 0 1rem; color: #1a1a1a; line-height: 1.45; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ccc; }
.summary { color: #444; } nav a { margin-right: 1rem; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: .92rem; max-width: 70rem; }
.table-wrap { overflow-x: auto; margin: .6rem 0 1.4rem; }
table { border-collapse: collapse; font-size: .85rem; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: left; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.long { white-space: normal; min-width: 24rem; }
th { background: #f2f2f2; white-space: normal; max-width: 9rem; vertical-align: bottom; } td:first-child, th:first-child { text-align: left; }
td.missing { color: #777; font-style: italic; text-align: center; background: #fafafa; }
.swatch { display: inline-block; width: .8rem; height: .8rem; margin-right: .35rem;
          vertical-align: -.05rem; border-radius: 2px; }
.warning { background: #fff4e5; border-left: 4px solid #e69f00; padding: .5rem 1rem; }
@media print { body { margin: 0; max-width: none; } nav { display: none; }
  figure, .table-wrap { break-inside: avoid; } }
"""


def render_html(report: Report) -> str:
    generated = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>edge-protect: what each protection costs and buys</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>What each protection costs and buys</h1>",
        f'<p class="summary">{html.escape(report.summary)} Generated {generated}.</p>',
    ]
    if report.skipped:
        names = ", ".join(html.escape(str(s.path)) for s in report.skipped)
        out.append(f'<p class="warning">Malformed files were skipped: {names}.</p>')
    for kind, item in report.sections:
        if kind == "chart":
            title, caption = _CAPTIONS[item]
            data = base64.b64encode(report.charts[item]).decode("ascii")
            out.append(f'<h2 id="{item}">{html.escape(title)}</h2>')
            out.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(title)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        elif kind == "heading":
            out.append(f"<h2>{html.escape(item)}</h2>")
        elif kind == "text":
            out.append("<ul>" + "".join(f"<li>{html.escape(t)}</li>" for t in item) + "</ul>")
        else:
            out.append(_html_table(item))
    out.append("</body></html>")
    return "\n".join(out) + "\n"


_NUMERIC_START = set("0123456789+-≈−")


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = []
    for row in table.rows:
        cells = []
        for i, cell in enumerate(row):
            attrs = ' class="missing"' if cell.missing else ""
            if not cell.missing and cell.text[:1] in _NUMERIC_START:
                attrs = ' class="num"'
            elif not cell.missing and len(cell.text) > 60:
                attrs = ' class="long"'
            if cell.title:
                attrs += f' title="{html.escape(cell.title)}"'
            if cell.span > 1:
                attrs += f' colspan="{cell.span}"'
            text = html.escape(cell.text)
            if i == 0 and not cell.missing and table.columns[0] == "protection":
                color = charts.protection_color(cell.text)
                text = f'<span class="swatch" style="background:{color}"></span>{text}'
            cells.append(f"<td{attrs}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = f"<p>{html.escape(table.note)}</p>" if table.note else ""
    return (
        f"<h3>{html.escape(table.title)}</h3>{note}"
        f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def render_markdown(report: Report) -> str:
    out = ["# What each protection costs and buys", "", report.summary, ""]
    for kind, item in report.sections:
        if kind == "chart":
            title, caption = _CAPTIONS[item]
            out += [f"## {title}", "", f"![{title}]({item}.png)", "", caption, ""]
        elif kind == "heading":
            out += [f"## {item}", ""]
        elif kind == "text":
            out += [f"- {t}" for t in item] + [""]
        else:
            out += _markdown_table(item)
    return "\n".join(out)


def _markdown_table(table: Table) -> list[str]:
    def esc(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [f"### {table.title}", ""]
    if table.note:
        lines += [table.note, ""]
    if not table.rows:
        return lines
    lines.append("| " + " | ".join(esc(c) for c in table.columns) + " |")
    lines.append("|" + "|".join(" --- " for _ in table.columns) + "|")
    for row in table.rows:
        cells = [c for c in row for _ in range(c.span)]
        lines.append(
            "| "
            + " | ".join(f"_{esc(c.text)}_" if c.missing else esc(c.text) for c in cells)
            + " |"
        )
    return lines + [""]


def write_report(runs_dir: Path, exports_dir: Path, results_dir: Path, out_dir: Path) -> Path:
    """Collects, draws and writes the report; returns the path of the HTML page."""
    coll = collect.collect(runs_dir, exports_dir, results_dir)
    if not (coll.runs or coll.results or coll.skipped):
        raise UsageError(
            f"nothing to report: no run in {runs_dir}/ and no result in {results_dir}/; "
            "train first ('make grid' or 'make train')"
        )
    out_dir = Path(out_dir)
    report = build(coll, out_dir)
    (out_dir / MARKDOWN_FILE).write_text(render_markdown(report))
    page = out_dir / HTML_FILE
    page.write_text(render_html(report))
    log.info("report: %s -> %s", report.summary, page)
    return page


# --- command line ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="pipeline.report", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default="runs", help="folder of run folders (searched recursively)")
    p.add_argument("--exports", default="exports", help="folder of export folders")
    p.add_argument("--results", default="results", help="board results, results/<device>/*.json")
    p.add_argument("--report", default="report", help="output folder")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    write_report(Path(args.runs), Path(args.exports), Path(args.results), Path(args.report))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
