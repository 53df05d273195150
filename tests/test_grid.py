import json
from pathlib import Path

import grid_helpers
import pytest

from pipeline import collect, grid, protections
from pipeline.errors import run_cli

EXPORTED = [t for t in grid.EXPORT_TARGETS if t != "edgetpu"]  # the stand-in cannot compile it
BENCHED = [t for t in EXPORTED if t != "tensorrt"]  # nor run TensorRT


@pytest.fixture(scope="module")
def grid_env(tmp_path_factory):
    """Stand-in exporter and runner, and a protection that fails, for the whole module."""
    root = tmp_path_factory.mktemp("grid")
    package = root / "pkgs" / "standin_exporters"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(grid_helpers.EXPORTER_MAIN)
    bench = root / "run_bench.py"
    bench.write_text(grid_helpers.BENCH_SCRIPT)
    log = root / "calls.log"
    log.touch()
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root / "pkgs"))
        mp.setenv("GRID_TEST_LOG", str(log))
        mp.setattr(grid, "EXPORTER_MODULE", "standin_exporters")
        mp.setattr(grid, "BENCH_SCRIPT", bench)
        # Only `none` and the broken stand-in: other protections' branches may or may not be merged.
        mp.setattr(protections, "PROTECTIONS", {"none": protections.PROTECTIONS["none"]})
        mp.setitem(protections.PROTECTIONS, "broken", "grid_helpers")
        mp.setattr(protections, "_OPTION_DESTS", {})
        yield {"root": root, "log": log}


def run_grid(env, *extra) -> int:
    root = env["root"]
    argv = [
        *("--datasets", "digits", "--prots", "none", "broken", "dp", "--epochs", "2"),
        *("--out", str(root / "runs"), "--exports", str(root / "exports")),
        *("--results", str(root / "results"), "--report", str(root / "report")),
        *("--device", "test-box", "--evaluations", "none", "--broken-rate", "0.5"),
        *extra,
    ]
    return run_cli(grid.main, argv)


def steps(env) -> dict[tuple, dict]:
    data = json.loads((env["root"] / "runs" / collect.GRID_FILE).read_text())
    return {(s["step"], s["prot"], s["target"]): s for s in data["steps"]}


def calls(env) -> list[str]:
    lines = env["log"].read_text().splitlines()
    env["log"].write_text("")
    return lines


@pytest.fixture(scope="module")
def first_run(grid_env):
    return run_grid(grid_env), steps(grid_env), calls(grid_env)


def test_grid_trains_exports_benchmarks_and_reports_despite_a_failing_run(grid_env, first_run):
    status, record, called = first_run
    root = grid_env["root"]
    assert status == 1  # a step failed; everything else still ran
    assert record[("train", "none", None)]["status"] == "done"
    broken = record[("train", "broken", None)]
    assert broken["status"] == "failed" and "broken on purpose" in broken["message"]
    assert record[("train", "dp", None)]["status"] == "not available"

    metrics = json.loads((root / "runs" / "digits-none" / "metrics.json").read_text())
    assert metrics["device"] == "test-box" and metrics["epochs_trained"] == 2
    for target in EXPORTED:
        assert record[("export", "none", target)]["status"] == "done"
        assert (root / "exports" / "digits-none" / target / "manifest.json").exists()
    edgetpu = record[("export", "none", "edgetpu")]
    assert edgetpu["status"] == "not available" and "edgetpu_compiler" in edgetpu["message"]
    for target in BENCHED:
        assert record[("bench", "none", target)]["status"] == "done"
        assert (root / "results" / "test-box" / f"digits-none-{target}.json").exists()
    assert record[("bench", "none", "tensorrt")]["status"] == "not available"
    assert sorted(called) == sorted(
        [f"export digits-none {t}" for t in grid.EXPORT_TARGETS]
        + [f"bench digits-none {t}" for t in EXPORTED]
    )
    html = (root / "report" / "index.html").read_text()
    assert html.count("data:image/png;base64,") == 4
    assert "training failed" in html and "this protection is broken on purpose" in html


def test_second_grid_run_skips_what_is_finished(grid_env, first_run):
    assert run_grid(grid_env, "--steps", "train", "export", "bench") == 1  # broken still fails
    record = steps(grid_env)
    assert record[("train", "none", None)]["status"] == "skipped"
    assert all(record[("export", "none", t)]["status"] == "skipped" for t in EXPORTED)
    assert all(record[("bench", "none", t)]["status"] == "skipped" for t in BENCHED)
    # Only the steps that could not run before are tried again.
    assert sorted(calls(grid_env)) == ["bench digits-none tensorrt", "export digits-none edgetpu"]


def test_grid_redoes_only_a_lost_export_and_its_benchmark(grid_env, first_run):
    root = grid_env["root"]
    onnx = root / "exports" / "digits-none" / "onnx"
    (onnx / "manifest.json").unlink()  # as if the export was interrupted
    run_grid(grid_env, "--steps", "export", "bench")
    assert sorted(calls(grid_env)) == [
        "bench digits-none onnx",
        "bench digits-none tensorrt",
        "export digits-none edgetpu",
        "export digits-none onnx",
    ]
    assert (onnx / "manifest.json").exists()


def test_each_run_gets_only_its_own_protection_options(grid_env):
    args, train_argv = grid.parse_args(["--epochs", "3", "--broken-rate", "0.5", "--seed", "4"])
    args.device_label = "box"
    none = grid.train_config("digits", "none", args, train_argv)
    broken = grid.train_config("digits", "broken", args, train_argv)
    assert none.options is None and none.seed == 4 and none.epochs == 3
    assert broken.options == grid_helpers.BrokenOptions(broken_rate=0.5) and broken.seed == 4


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--prots", "magic"], "unknown protection 'magic'"),
        (["--datasets", "imagenet"], "unknown data set 'imagenet'"),
        (["--targets", "tpu"], "unknown target 'tpu'"),
        (["--steps", "deploy"], "unknown step 'deploy'"),
        (["--dataset", "digits"], "the grid takes --datasets and --prots"),
        (["--epochs", "0"], "epochs > 0"),
    ],
)
def test_bad_grid_requests_exit_2_before_training(argv, message, capsys, tmp_path):
    assert run_cli(grid.main, [*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not any(Path(tmp_path).iterdir())


def test_unknown_training_option_exits_2_before_training(tmp_path):
    with pytest.raises(SystemExit) as exc:
        grid.main(["--out", str(tmp_path), "--no-such-option", "1"])
    assert exc.value.code == 2
    assert not any(Path(tmp_path).iterdir())
