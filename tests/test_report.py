import base64
import re
import shutil
import subprocess

import pytest
import report_fixtures as fx

from pipeline import charts, collect
from pipeline.errors import run_cli
from pipeline.report import main

CHART_NAMES = ("accuracy_per_epoch", "training_time", "inference_latency", "protection_cost")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def protection_colours(fig) -> dict[str, set[str]]:
    """{protection: colours of the artists tagged with it} in one figure."""
    import matplotlib.colors as mcolors

    seen: dict[str, set[str]] = {}
    for artist in fig.findobj(lambda a: (a.get_gid() or "").startswith("protection:")):
        prot = artist.get_gid().split(":", 1)[1]
        if hasattr(artist, "get_offsets"):  # scatter points
            colours = list(artist.get_facecolor())
        elif hasattr(artist, "get_xydata"):  # lines
            colours = [artist.get_color()]
        else:  # bars
            colours = [artist.get_facecolor()]
        seen.setdefault(prot, set()).update(mcolors.to_hex(c) for c in colours)
    return seen


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    paths = fx.build(root)
    argv = ["--runs", str(paths["runs"]), "--exports", str(paths["exports"])]
    argv += ["--results", str(paths["results"]), "--report", str(root / "report")]
    colours = {}
    save = charts.save

    def save_and_note_colours(fig, path):
        colours[path.stem] = protection_colours(fig)
        return save(fig, path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(charts, "save", save_and_note_colours)
        status = run_cli(main, argv)
    out = root / "report"
    return {
        "status": status,
        "root": root,
        "out": out,
        "html": (out / "index.html").read_text(),
        "md": (out / "report.md").read_text(),
        "colours": colours,
        **paths,
    }


def md_table(md: str, title: str) -> dict[str, dict[str, str]]:
    """The Markdown table under '### title' as {first cell: {column: cell}}."""
    lines = md.split(f"### {title}\n", 1)[1].strip().splitlines()
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append(line)
    header = [c.strip() for c in rows[0].strip("|").split(" | ")]
    table = {}
    for line in rows[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\) \| ", line.strip()[2:-2])]
        table[cells[0]] = dict(zip(header, cells, strict=True))
    return table


def test_report_writes_every_chart_as_png_and_embeds_them_in_one_page(rendered):
    assert rendered["status"] == 0
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', rendered["html"])
    assert len(embedded) == len(CHART_NAMES)
    for name, data in zip(CHART_NAMES, embedded, strict=True):
        png = (rendered["out"] / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000
        assert base64.b64decode(data) == png
        assert f"]({name}.png)" in rendered["md"]
    # Self-contained: nothing is fetched from elsewhere.
    assert not re.search(r'(src|href)="(?!data:|#)', rendered["html"])
    assert "<link" not in rendered["html"] and "<script" not in rendered["html"]


def test_protection_table_holds_the_fixture_values(rendered):
    digits = md_table(rendered["md"], "Protections on digits")
    assert list(digits) == ["none", "dp", "adv", "adv-retrain", "anomaly", "he"]
    dp = digits["dp"]
    assert dp["clean accuracy"] == "87.3 %"
    assert dp["accuracy under PGD-40 ε=0.1"] == "18.0 %"
    assert dp["accuracy under FGSM ε=0.1"] == "28.0 %"
    assert dp["membership AUC"] == "0.515" and dp["membership advantage"] == "0.030"
    assert dp["ε"] == "2.94" and dp["δ"] == "1.0e-05"
    assert dp["training time"] == "81 s"
    assert dp["int8 model"] == "297.85 KiB"  # 305,000 bytes
    assert dp["artifact agreement (lowest)"] == "99.2 % (tflite-int8)"
    assert digits["anomaly"]["filtered records"] == "37 (precision 0.81, recall 0.75)"
    assert digits["anomaly"]["training time"] == "16.1 s"  # 14.1 s of epochs + 2 s filtering
    assert digits["he"]["clean accuracy"] == "92.2 % (encrypted: 91.9 %)"
    assert digits["none"]["weights (float32)"] == "1.14 MiB"  # 300,000 parameters
    assert digits["adv"]["one-pixel attack success"] == "30.0 %"


def test_missing_cells_say_why(rendered):
    mnist = md_table(rendered["md"], "Protections on mnist")
    assert mnist["adv-retrain"]["clean accuracy"] == "_not run_"
    assert mnist["anomaly"]["clean accuracy"] == "_not finished_"
    assert mnist["none"]["ε"] == "_not applicable_"
    assert mnist["none"]["int8 model"] == "_not exported_"
    digits = md_table(rendered["md"], "Protections on digits")
    assert digits["dp"]["filtered records"] == "_not applicable_"

    title = "Inference on digits: p50 latency per data point and accuracy"
    inference = md_table(rendered["md"], title)
    cpu, jetson = "desktop-cpu · tflite-int8 (ai_edge_litert)", "jetson-nano · onnx (onnxruntime)"
    assert inference["adv-retrain"][cpu] == "_not exported_"
    assert inference["adv-retrain"][jetson] == "_board not benchmarked_"
    assert inference["he"][cpu] == "_not applicable_"
    mnist_inference = md_table(rendered["md"], title.replace("digits", "mnist"))
    assert mnist_inference["adv-retrain"][cpu] == "_not run_"
    assert mnist_inference["anomaly"][jetson] == "_not finished_"
    # The page marks the same cells as missing, with the reason as text.
    assert '<td class="missing">board not benchmarked</td>' in rendered["html"]


def test_inference_table_holds_p50_p99_and_accuracy_per_board(rendered):
    title = "Inference on digits: p50 latency per data point and accuracy"
    inference = md_table(rendered["md"], title)
    cpu, jetson = "desktop-cpu · tflite-int8 (ai_edge_litert)", "jetson-nano · onnx (onnxruntime)"
    assert inference["none"][cpu] == "0.0213 ms (p99 0.0639 ms), acc 95.9 %"
    assert inference["none"][jetson] == "0.412 ms (p99 1.24 ms), acc 95.9 %"


def test_he_row_compares_encrypted_with_plaintext_inference(rendered):
    title = "Encrypted inference (PROT=he) against the same model on plaintext"
    he = md_table(rendered["md"], title)
    assert he["digits"]["encrypted accuracy"] == "91.9 %"
    assert he["digits"]["encrypted total"] == "123 ms"
    assert he["digits"]["slowdown"] == "2,468 ×"
    assert he["digits"]["security"] == "128-bit"
    assert he["mnist"]["encrypted accuracy"] == "_not run_"


def test_cost_table_measures_each_protection_against_the_unprotected_run(rendered):
    section = rendered["md"].split("### Cost and gain against the unprotected run")[1]
    section = section.split("###")[0]
    lines = [line for line in section.splitlines() if line.startswith("| digits | dp |")]
    assert lines and "-8.8 pp" in lines[0] and "6.48 ×" in lines[0]
    assert "+6.0 pp (PGD-40 ε=0.1)" in lines[0] and "+18.0 pp" in lines[0]
    anomaly = [line for line in section.splitlines() if line.startswith("| digits | anomaly |")]
    assert "+4.7 pp" in anomaly[0]  # 95.83 % filtered against 91.11 % unfiltered
    assert "| he |" not in section and "| mnist | dp |" in section


def test_malformed_result_files_are_named_and_skipped(rendered):
    skipped = md_table(rendered["md"], "Skipped input files")
    names = {name.rsplit("/", 1)[-1]: row["problem"] for name, row in skipped.items()}
    assert names["digits-adv-onnx.json"].startswith("not valid JSON")
    assert names["digits-dp-onnx.json"] == "lacks the key 'latency_ms.p50'"
    assert "digits-adv-onnx.json" in rendered["html"] and rendered["status"] == 0
    # The skipped result leaves its cell empty with a reason, and nothing else is lost.
    inference = md_table(
        rendered["md"], "Inference on digits: p50 latency per data point and accuracy"
    )
    assert inference["dp"]["jetson-nano · onnx (onnxruntime)"] == "_board not benchmarked_"
    assert inference["dp"]["desktop-cpu · tflite-int8 (ai_edge_litert)"].startswith("0.0221 ms")


def test_each_protection_has_one_colour_in_every_chart(rendered):
    assert set(rendered["colours"]) == set(CHART_NAMES)
    seen: dict[str, set[str]] = {}
    for chart in rendered["colours"].values():
        for prot, colours in chart.items():
            seen.setdefault(prot, set()).update(colours)
    assert set(seen) == {"none", "dp", "adv", "adv-retrain", "anomaly", "he"}
    for prot, colours in seen.items():
        assert colours == {charts.protection_color(prot)}, prot
    assert len({charts.protection_color(p) for p in seen}) == len(seen)
    # A protection added later gets a colour that does not depend on the others present.
    assert charts.protection_color("future") == charts.protection_color("future")
    assert charts.protection_color("future") not in {charts.protection_color(p) for p in seen}


def test_report_without_any_input_exits_2_with_one_line(tmp_path, capsys):
    argv = ["--runs", str(tmp_path / "r"), "--results", str(tmp_path / "x")]
    assert run_cli(main, [*argv, "--report", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "nothing to report" in err and "\n" not in err


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install -y chromium)")
def test_page_loads_in_headless_chromium_with_every_image_decoded(rendered, tmp_path):
    # A copy of the page with a probe that reports, in the title, how many images decoded.
    probe = (
        "<script>window.addEventListener('load', () => { const imgs = [...document.images];"
        " document.title = 'decoded ' + imgs.filter(i => i.complete && i.naturalWidth > 0)"
        ".length + ' of ' + imgs.length; });</script>"
    )
    page = tmp_path / "probe.html"
    page.write_text(rendered["html"].replace("</body>", probe + "</body>"))
    proc = subprocess.run(
        [
            CHROMIUM,
            *("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"),
            *("--disable-component-update", "--no-first-run", "--disable-sync"),
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "<title>decoded 4 of 4</title>" in proc.stdout
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    assert "Protections on digits" in proc.stdout


def test_runs_of_one_configuration_on_two_machines_sit_side_by_side(tmp_path):
    from pipeline import report

    paths = fx.build(tmp_path)
    jetson = fx.metrics("digits", "none", device="jetson-nano")
    jetson["train_seconds"] = 300.0
    fx.write(paths["runs"] / "jetson" / "digits-none" / "metrics.json", jetson)
    fx.write(
        paths["runs"] / "jetson" / "digits-none" / "history.json", fx.history("digits", "none")
    )
    coll = collect.collect(paths["runs"], paths["exports"], paths["results"])

    table = report.protection_table(coll, "digits")
    none_rows = [row for row in table.rows if row[0].text == "none"]
    trained_on = table.columns.index("trained on")
    training_time = table.columns.index("training time")
    assert sorted((r[trained_on].text, r[training_time].text) for r in none_rows) == [
        ("cpu-2core", "12.5 s"),
        ("jetson-nano", "5.0 min"),
    ]
    fig = charts.training_time(coll)
    ticks = [t.get_text() for t in fig.axes[1].get_xticklabels()]
    assert ticks == ["cpu-2core", "jetson-nano"]
    charts.plt.close(fig)
