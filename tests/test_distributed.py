"""--engine ray (a local 2-CPU cluster) and torchrun (2 CPU processes, gloo) against the plain
single-process run: the same predictions, heatmap maps and JSON, each image once, in input order,
also when a Ray worker dies mid-run.

The model is efficientnet_lite0 (shipped offline) at one size, on 5 small synthetic images (an odd
count: torchrun's ranks take 3 and 2).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fcnclassify import cli

ray = pytest.importorskip("ray")
pytest.importorskip("efficientnet_lite_pytorch")

FAST = ["-m", "efficientnet_lite0", "--sizes", "224", "--no-flip", "--json", "-q"]
ATOL = 2e-6  # the scores are rounded to 6 decimals; a worker may use another thread count


@pytest.fixture(scope="module")
def cluster():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    import cv2

    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(13)
    for i in range(5):
        h, w = 224 + 9 * i, 260 - 7 * i
        yy, xx = np.mgrid[0:h, 0:w]
        image = np.stack([(xx * (i + 1)) % 256, (yy * 3) % 256, rng.integers(0, 256, (h, w))], -1)
        cv2.imwrite(str(folder / f"img{i}.png"), image.astype(np.uint8))
    return folder


def run(capsys, *args):
    code = cli.main([*map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_same_documents(got: dict, want: dict) -> None:
    assert [d["image"] for d in got["images"]] == [d["image"] for d in want["images"]]
    for g, w in zip(got["images"], want["images"]):
        assert (g["width"], g["height"], g["maps"]) == (w["width"], w["height"], w["maps"])
        assert [c["id"] for c in g["classes"]] == [c["id"] for c in w["classes"]], g["image"]
        np.testing.assert_allclose([c["score"] for c in g["classes"]],
                                   [c["score"] for c in w["classes"]], atol=ATOL, rtol=0)
    assert {k: v for k, v in got.items() if k != "images"} == \
        {k: v for k, v in want.items() if k != "images"}


@pytest.fixture(scope="module")
def plain(images):
    """The single-process classify document (stdout captured by hand: module scope)."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["classify", str(images), *FAST]) == 0
    return json.loads(out.getvalue())


def test_ray_classify_is_the_plain_run(cluster, images, plain, capsys):
    code, out, _ = run(capsys, "classify", images, *FAST, "--engine", "ray")
    assert code == 0
    assert_same_documents(json.loads(out), plain)


def test_ray_heatmap_writes_the_plain_runs_files_and_maps(cluster, images, tmp_path, capsys):
    outputs = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        code, stdout, _ = run(capsys, "heatmap", images, *FAST, "--save-npz", "--out", out,
                              "--engine", engine)
        assert code == 0
        outputs[engine] = out, json.loads(stdout)
    (local, want), (remote, got) = outputs["local"], outputs["ray"]
    assert sorted(p.name for p in remote.iterdir()) == sorted(p.name for p in local.iterdir())
    for npz in sorted(local.glob("*_maps.npz")):
        a, b = np.load(npz), np.load(remote / npz.name)
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            if a[key].dtype.kind in "fc":
                np.testing.assert_allclose(b[key], a[key], atol=1e-5, rtol=1e-5, err_msg=key)
            else:
                np.testing.assert_array_equal(b[key], a[key], err_msg=key)
    for document in (want, got):  # the output paths name their folder
        for d in document["images"]:
            d.pop("grid"), d.pop("viewer", None)
            for c in d["classes"]:
                c.pop("overlay", None), c.pop("peak")
    assert_same_documents(got, want)


def test_ray_evaluate_of_a_csv_is_the_plain_evaluation(cluster, images, tmp_path, capsys):
    csv = tmp_path / "labels.csv"
    csv.write_text("".join(f"{p},{i * 100}\n" for i, p in enumerate(sorted(images.glob("*.png")))))
    args = ["evaluate", csv, "-m", "efficientnet_lite0", "--sizes", "224", "--json", "-q"]
    code, want, _ = run(capsys, *args)
    assert code == 0
    code, got, _ = run(capsys, *args, "--engine", "ray")
    assert code == 0
    assert json.loads(got) == json.loads(want)


class _DiesOnce:
    """A network actor that kills its process the first time it meets ``victim`` (a marker file
    makes it once across the restart)."""

    def __init__(self, work, victim: str, marker: str) -> None:
        from fcnclassify.distributed.ray import Worker

        self.inner, self.victim, self.marker = Worker(work), victim, marker

    def __call__(self, batch):
        import pickle

        for item in batch["item"]:
            if pickle.loads(item) == self.victim and not os.path.exists(self.marker):
                Path(self.marker).touch()
                os._exit(1)
        return self.inner(batch)


def test_a_worker_killed_mid_run_loses_no_image_and_duplicates_none(cluster, images, plain, tmp_path):
    from ray import cloudpickle

    from fcnclassify.distributed.ray import map_ordered
    from fcnclassify.distributed.work import PredictWork
    from fcnclassify.models.registry import load_model

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    paths = [str(p) for p in sorted(images.glob("*.png"))]
    marker = tmp_path / "died"
    worker = functools.partial(_DiesOnce, victim=paths[2], marker=str(marker))
    worker.__name__ = "DiesOnce"  # Ray Data names the operator after it
    work = PredictWork(functools.partial(load_model, "efficientnet_lite0"),
                       {"sizes": (224,), "flip": False})
    seen = []
    results = map_ordered(work, paths, workers=2, worker=_actor_class(worker))
    for path, prediction in zip(paths, results):
        seen.append(prediction.path)
        want = next(d for d in plain["images"] if d["image"] == path)
        top = prediction.topk(5)
        assert [i for i, _, _ in top] == [c["id"] for c in want["classes"]]
        np.testing.assert_allclose([s for _, _, s in top], [c["score"] for c in want["classes"]],
                                   atol=ATOL, rtol=0)
    assert marker.exists(), "the worker never died: the test tested nothing"
    assert seen == paths


def _actor_class(factory):
    class DiesOnce:
        def __init__(self, work):
            self.inner = factory(work)

        def __call__(self, batch):
            return self.inner(batch)
    return DiesOnce


def test_torchrun_two_cpu_processes_print_the_plain_runs_document(images, plain):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "fcnclassify", "classify", str(images), *FAST],
        capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_documents(json.loads(done.stdout), plain)  # one document: only rank 0 printed


def test_torchrun_gives_rank_r_the_items_r_mod_world_and_rank_0_all_in_order(monkeypatch):
    """Ranks run one after the other with a hand-made gather: rank r must do items r::3 of 7."""
    import torch.distributed as dist

    from fcnclassify.distributed import torchrun

    class Work:
        def setup(self):
            return None

        def decode(self, item):
            return item

        def run(self, state, item, decoded):
            return int(os.environ["RANK"]), item

    for r in range(3):
        monkeypatch.setenv("RANK", str(r))
        monkeypatch.setenv("WORLD_SIZE", "3")
        monkeypatch.setattr(torchrun, "_join", lambda r=r: (r, 3, False))
        sent = []

        def gather(obj, out, dst, sent=sent):  # rank 0 receives its own result 3 times
            sent.append(obj)
            if out is not None:
                out[:] = [obj] * len(out)

        monkeypatch.setattr(dist, "gather_object", gather)
        received = list(torchrun.map_ordered(Work(), list(range(7))))
        assert [item for _, item in filter(None, sent)] == list(range(7))[r::3]
        assert {rank for rank, _ in filter(None, sent)} == {r}
        assert len(sent) == 3  # one gather per round: ceil(7 / 3), the short round sends None
        assert len(received) == (7 if r == 0 else 0)


def test_missing_ray_extra_is_one_line_and_exit_2(images, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as without the extra
    code, out, err = run(capsys, "classify", images, *FAST, "--engine", "ray")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "fcnclassify[ray]" in lines[0], err


def test_ray_address_without_engine_ray_is_refused(images, capsys):
    code, _, err = run(capsys, "classify", images, *FAST, "--ray-address", "auto")
    assert code == 2 and "--ray-address needs --engine ray" in err


def test_torchrun_heatmap_writes_the_plain_runs_files_once(images, tmp_path, capsys):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    local, ranks = tmp_path / "local", tmp_path / "torchrun"
    args = ["heatmap", str(images), *FAST, "--save-npz"]
    code, want, _ = run(capsys, *args, "--out", local)
    assert code == 0
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "fcnclassify", *args, "--out", str(ranks)],
        capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in ranks.iterdir()) == sorted(p.name for p in local.iterdir())
    manifest = json.loads((ranks / "fcnclassify-manifest.json").read_text())
    assert manifest.keys() == json.loads((local / "fcnclassify-manifest.json").read_text()).keys()
    for npz in sorted(local.glob("*_maps.npz")):
        a, b = np.load(npz), np.load(ranks / npz.name)
        for key in a.files:
            if a[key].dtype.kind in "fc":
                np.testing.assert_allclose(b[key], a[key], atol=1e-5, rtol=1e-5, err_msg=key)
    assert len(json.loads(done.stdout)["images"]) == len(json.loads(want)["images"]) == 5


def test_evaluate_with_an_unreadable_image_is_one_line_and_exit_2_on_torchrun(images, tmp_path,
                                                                                capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    csv = tmp_path / "labels.csv"
    csv.write_text(f"{sorted(images.glob('*.png'))[0]},1\n{bad},2\n")
    args = ["evaluate", str(csv), "-m", "efficientnet_lite0", "--sizes", "224", "-q"]
    code, _, plain_err = run(capsys, *args)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "fcnclassify", *args], capture_output=True, text=True, env=env, timeout=300)
    assert code == 2 and "broken.png" in plain_err
    wanted = [line for line in plain_err.splitlines() if "broken.png" in line]
    assert len(wanted) == 1
    assert done.returncode != 0 and wanted[0] in done.stderr, done.stderr[-2000:]


def test_ray_slide_tiles_are_the_plain_run(cluster, tmp_path, capsys, monkeypatch):
    """One slide's tiles as Ray jobs (here one tile each, on two actors), the cells written by the
    driver: the stored map, the ranking and the peaks equal the single-process run's."""
    from fcnclassify.distributed import slides

    monkeypatch.setattr(slides, "TILES_PER_JOB", 1)
    pytest.importorskip("tifffile")
    import zarr
    from skimage import data

    from slide_files import write_test_slide

    image = np.full((1000, 1400, 3), (238, 236, 240), np.uint8)
    image[80:380, 100:551] = data.chelsea()[:300, :451]
    image[520:920, 700:1100] = data.coffee()[:400, :400]
    slide = tmp_path / "scan.tif"
    write_test_slide(slide, image, levels=2, tile=256)
    options = ["-m", "efficientnet_lite0", "--max-memory", "300MB", "--json", "-q", "--topk", "3"]
    documents, maps = [], []
    for name, extra in (("plain", []), ("ray", ["--engine", "ray"])):
        code, out, err = run(capsys, "heatmap", slide, "--out", tmp_path / name, *options, *extra)
        assert code == 0, err
        document = json.loads((tmp_path / name / "scan-tif_slide" / "summary.json").read_text())
        documents.append(document)
        maps.append(zarr.open_group(str(tmp_path / name / "scan-tif_slide" / "scores.zarr"),
                                    mode="r")["logits"][...].astype(np.float32))
    plain, on_ray = documents
    assert on_ray["evaluated"] == plain["evaluated"] >= 2 and on_ray["skipped"] == plain["skipped"]
    np.testing.assert_allclose(maps[1], maps[0], rtol=2e-3, atol=2e-3, equal_nan=True)
    assert [c["index"] for c in on_ray["classes"]] == [c["index"] for c in plain["classes"]]
    assert [c["peak"]["box"] for c in on_ray["classes"]] == [c["peak"]["box"] for c in plain["classes"]]
