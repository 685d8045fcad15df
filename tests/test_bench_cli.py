"""``fcnclassify bench`` and the benchmarks' outputs: where results go, what is never overwritten,
and the one line that names a missing extra. The measurements are replaced by an empty plan: these
tests check the plumbing around them in a few seconds, not the benchmark itself."""

from __future__ import annotations

import hashlib
import json
import re
import sys

import pytest

from fcnclassify.cli import main
from fcnclassify.commands.bench import suite_root

ROOT = suite_root()
sys.path.insert(0, str(ROOT))  # the suite ships with the checkout, not the package

from benchmarks import extras, huge_image, report, suite, throughput  # noqa: E402

REAL_MISSING = extras.missing

FILES = ["dense_vs_crops_cpu.csv", "dense_vs_crops_cpu.json", "dense_vs_crops_cpu.md"]


@pytest.fixture(autouse=True)
def bench_extra_installed(monkeypatch):
    """The 'bench' extra counts as installed (the plumbing runs no model that needs it; the test
    install has only '.[test]'); a module a test sets to None in sys.modules is missing."""
    monkeypatch.setattr(extras, "missing",
                        lambda modules: [m for m in modules if m in sys.modules and sys.modules[m] is None])


@pytest.fixture
def empty_plan(monkeypatch, tmp_path):
    """No configurations to measure and no real-weight check: a run only writes its (empty) results."""
    monkeypatch.setattr(suite, "make_plan", lambda args, device: {})
    monkeypatch.setattr(suite, "real_agreement", lambda device, quick: {})
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def no_run(monkeypatch, tmp_path):
    """A run that must stop before measuring anything."""
    def started(*args, **kwargs):
        raise AssertionError("the benchmark started")

    monkeypatch.setattr(suite, "make_plan", started)
    monkeypatch.setattr(suite, "real_agreement", started)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def bench(capsys, *argv):
    code = main(["bench", "--device", "cpu", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *needles):
    assert code == 2 and err.count("\n") == 1 and err.startswith("fcnclassify bench: error: "), err
    for needle in needles:
        assert needle in err, err


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("module", ["matplotlib", "timm"])
def test_a_missing_module_of_the_bench_extra_is_one_line_before_the_run(capsys, monkeypatch, no_run,
                                                                        module):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: import raises
    code, out, err = bench(capsys, "--quick")
    one_line_error(code, err, "pip install 'fcnclassify[bench]'", " not installed)")
    assert re.search(rf"\(({module}|[^()]*, {module})(, [^()]*)? not installed\)", err), err
    assert out == "" and list(no_run.iterdir()) == []  # nothing measured, nothing written


def test_missing_finds_what_cannot_be_imported(monkeypatch):
    monkeypatch.setitem(sys.modules, "json", None)  # as if not installed
    assert REAL_MISSING(["os", "json", "no_such_module_xyz", "no_such_package.sub"]) == [
        "json", "no_such_module_xyz", "no_such_package.sub"]


def test_python_m_benchmarks_names_the_extra_too(capsys, monkeypatch, no_run):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code = suite.main(["--quick", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("benchmarks: error: "), err
    assert "pip install 'fcnclassify[bench]'" in err


def test_only_the_modules_a_run_uses_are_required(capsys, monkeypatch, empty_plan):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # plots off
    monkeypatch.setitem(sys.modules, "timm", None)  # only the vgg16 baselines use timm
    code, _, err = bench(capsys, "--models", "alexnet", "--no-plots")
    assert code == 0, err


def test_results_go_to_a_new_folder_in_the_current_directory(capsys, empty_plan):
    committed = _digests(ROOT / "benchmarks" / "results")
    code, out, err = bench(capsys, "--no-plots")
    assert code == 0, err
    (folder,) = (empty_plan / "bench-results").iterdir()
    assert re.fullmatch(r"\d{8}-\d{6}", folder.name)  # <date>-<time>
    assert sorted(p.name for p in folder.iterdir()) == FILES
    doc = json.loads((folder / "dense_vs_crops_cpu.json").read_text())
    assert doc["rows"] == [] and doc["quick"] is False
    assert f"wrote {folder.relative_to(empty_plan) / 'dense_vs_crops_cpu.json'}" in err
    assert _digests(ROOT / "benchmarks" / "results") == committed  # the committed results untouched


def test_existing_results_are_replaced_only_with_force(capsys, empty_plan):
    out = empty_plan / "results"
    assert bench(capsys, "--no-plots", "--out", out)[0] == 0
    (out / "dense_vs_crops_cpu.json").write_text("earlier run")
    before = _digests(out)
    code, _, err = bench(capsys, "--no-plots", "--out", out)
    one_line_error(code, err, f"{out / 'dense_vs_crops_cpu.json'} exists", "--force")
    assert _digests(out) == before
    assert bench(capsys, "--no-plots", "--out", out, "--force")[0] == 0
    assert json.loads((out / "dense_vs_crops_cpu.json").read_text())["rows"] == []


def test_an_existing_plot_is_not_overwritten_either(capsys, no_run):
    out = no_run / "results"
    out.mkdir()
    (out / "dense_vs_crops_cpu_quick_time.png").write_bytes(b"earlier plot")
    code, _, err = bench(capsys, "--quick", "--out", out)
    one_line_error(code, err, "dense_vs_crops_cpu_quick_time.png exists", "--force")
    assert (out / "dense_vs_crops_cpu_quick_time.png").read_bytes() == b"earlier plot"


def test_write_refuses_a_file_that_appeared_during_the_run(tmp_path):
    doc = {"quick": True, "rows": [], "device": "cpu", "torch": "", "seconds": 0, "targets": []}
    (tmp_path / "dense_vs_crops_cpu_quick.md").write_text("another run")
    with pytest.raises(FileExistsError, match="dense_vs_crops_cpu_quick.md exists"):
        report.write(doc, tmp_path, device="cpu", plots=False)
    assert [p.name for p in tmp_path.iterdir()] == ["dense_vs_crops_cpu_quick.md"]
    assert report.write(doc, tmp_path, device="cpu", plots=False, force=True) == [
        tmp_path / name for name in ("dense_vs_crops_cpu_quick.json", "dense_vs_crops_cpu_quick.csv",
                                     "dense_vs_crops_cpu_quick.md")]


def test_result_files_name_the_plots_write_makes():
    files = report.result_files(ROOT, device="cuda", quick=False)
    assert [p.name for p in files] == ["dense_vs_crops_cuda.json", "dense_vs_crops_cuda.csv",
                                       "dense_vs_crops_cuda.md", "dense_vs_crops_cuda_speedup.png",
                                       "dense_vs_crops_cuda_time.png"]


@pytest.mark.parametrize("module, argv, name", [
    (huge_image, ["--size", "64", "--device", "cpu"], "huge_image_64_float32_cpu.json"),
    (throughput, ["--count", "2", "--model", "alexnet"], "throughput_alexnet_2.json"),
])
def test_other_benchmarks_refuse_to_overwrite_before_running(monkeypatch, tmp_path, module, argv,
                                                             name):
    def started(*args, **kwargs):
        raise AssertionError("the benchmark started")

    monkeypatch.setattr(module, "convert" if module is huge_image else "load_model", started)
    (tmp_path / name).write_text("earlier run")
    with pytest.raises(FileExistsError, match=f"{name} exists.*--force"):
        module.main([*argv, "--out", str(tmp_path)])
    assert (tmp_path / name).read_text() == "earlier run"
