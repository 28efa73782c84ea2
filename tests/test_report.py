"""The quality report: evaluation of a real ONNX model, the HTML page, FID/KID gating, publishing, the CLI."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import warnings
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from torch import nn

from models.platform.settings import Settings
from models.platform.store import Store
from models.quality.evaluation import SLAB_NOTE, EvalConfig, EvaluationAborted, RealImages, evaluate
from models.quality.metrics import EvalInputs, compute
from models.report.page import render
from tests.conftest import DEMO_SLICES, blobs, publish_tiny_model, put_dataset, worker_env

FAST = EvalConfig(synthetic_count=40, metrics=("intensity_w1", "memorization", "diversity_msssim", "fid", "kid"))


@pytest.fixture(scope="module")
def demo() -> np.ndarray:
    """The 57 real demo slices, uint8 [57, 256, 256] as the store keeps them."""
    return np.stack(
        [np.asarray(Image.open(p).convert("L").resize((256, 256))) for p in sorted(DEMO_SLICES.glob("*.png"))]
    )


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[tuple[str, str]] = []  # (alt, src)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            a = dict(attrs)
            self.images.append((a.get("alt") or "", a.get("src") or ""))


def embedded_images(page: str) -> dict[str, Image.Image]:
    """Every <img> of the page, decoded from its data: URI (fails when one does not decode)."""
    parser = _Images()
    parser.feed(page)
    out = {}
    for alt, src in parser.images:
        assert src.startswith("data:image/png;base64,"), f"{alt}: not embedded"
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
        image.load()
        out[alt] = image
    return out


def test_html_report_embeds_every_plot(store: Store, demo: np.ndarray, tmp_path: Path) -> None:
    version = publish_tiny_model(store, epochs=3)
    manifest = store.get_manifest(version)
    real = RealImages(demo[1::2], "held-out <b>split</b>", demo[0::2], "training split")
    report = evaluate(
        store.model_dir(version),
        tmp_path,
        real,
        EvalConfig(synthetic_count=40),
        samples_dir=store.job_dir(manifest.job_id) / "samples",
    )
    assert set(report["plots"]) == {
        "loss_curves",
        "samples_synthetic",
        "samples_real",
        "intensity_histograms",
        "closest_pairs",
    }
    assert [e["epoch"] for e in report["epochs"]] == [1, 2, 3]
    assert report["data"]["synthetic"]["count"] == 40 and report["data"]["real"]["count"] == 28
    assert json.loads((tmp_path / "report.json").read_text()) == report

    page = render(json.loads((tmp_path / "report.json").read_text()), tmp_path)  # as the API reads it
    images = embedded_images(page)
    expected = {
        "Training losses",
        "epoch 1",
        "epoch 2",
        "epoch 3",
        "Synthetic slices (the first evaluated seeds)",
        "Real slices (the real side of the comparison)",
        "Pixel intensities, real and synthetic",
        "Synthetic slices nearest to a training slice",
    }
    assert set(images) == expected
    assert all(im.width > 20 and im.height > 20 for im in images.values())
    assert "held-out &lt;b&gt;split&lt;/b&gt;" in page and "<b>split</b>" not in page  # escaped
    order = ["c2st_auc", "intensity_w1", "diversity_msssim", "memorization", "fid", "kid"]
    positions = [page.index(f"<code>{name}</code>") for name in order]
    assert positions == sorted(positions)  # the registry's order, though report.json sorts its keys
    assert "not computed: DRAWAI_FID_WEIGHTS is not set" in page
    # The closest pairs name real seeds: the synthetic image of a pair is what /generate gives for it.
    pair = report["closest_pairs"][0]
    assert pair["seed"] == pair["synthetic_index"] and 0 <= pair["training_index"] < 29


def test_copying_generator_is_flagged_in_the_report(demo: np.ndarray) -> None:
    """A "generator" that returns training slices: every pair is a likely copy at distance 0."""
    train, held = demo[0::2, ::4, ::4], demo[1::2, ::4, ::4]
    copies = train[np.random.default_rng(0).integers(0, len(train), 40)]
    r = compute(["memorization"], EvalInputs(train, held, copies))["memorization"]
    assert r["computed"] and r["likely_copies_fraction"] == 1.0


def _standin_inception(path: Path) -> Path:
    """A TorchScript feature extractor with the Inception file's calling convention (random weights).

    The real inception-2015-12-05.pt cannot be fetched here; this exercises the same loading,
    resizing and torchmetrics statistics on a network of the same interface.
    """

    class Detector(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(
                nn.Conv2d(3, 16, 8, stride=4),
                nn.ReLU(),
                nn.Conv2d(16, 32, 4, stride=4),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(2),
            )

        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            assert x.shape[1:] == (3, 299, 299)
            return self.net((x - 128.0) / 128.0).flatten(1)

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated, and it is what the file is
        torch.jit.script(Detector().eval()).save(str(path))
    return path


def test_fid_and_kid_only_with_local_weights(demo: np.ndarray, tmp_path: Path) -> None:
    train, held = demo[0::2, ::4, ::4], demo[1::2, ::4, ::4]
    noise = np.random.default_rng(1).integers(0, 256, size=(40, 64, 64), dtype=np.uint8)

    absent = compute(["fid", "kid"], EvalInputs(train, held, noise))
    assert absent["fid"]["computed"] is False and "DRAWAI_FID_WEIGHTS is not set" in absent["fid"]["reason"]
    assert "never downloads" in absent["kid"]["reason"]
    missing = compute(["fid"], EvalInputs(train, held, noise, fid_weights=tmp_path / "nope.pt"))["fid"]
    assert missing["computed"] is False and "not a file" in missing["reason"]
    (tmp_path / "corrupt.pt").write_bytes(b"not a torchscript archive")
    corrupt = compute(["kid"], EvalInputs(train, held, noise, fid_weights=tmp_path / "corrupt.pt"))["kid"]
    assert corrupt["computed"] is False and "not a usable TorchScript Inception network" in corrupt["reason"]

    weights = _standin_inception(tmp_path / "inception.pt")
    same = compute(["fid", "kid"], EvalInputs(train, held, train, fid_weights=weights))
    apart = compute(["fid", "kid"], EvalInputs(train, held, noise, fid_weights=weights))
    for name in ("fid", "kid"):
        assert same[name]["computed"] and apart[name]["computed"]
        assert same[name]["synthetic_vs_real"] == pytest.approx(same[name]["real_vs_real"])  # train is the reference
        assert apart[name]["synthetic_vs_real"] > 20 * abs(same[name]["synthetic_vs_real"]) + 1e-3
    assert apart["fid"]["features"] == 128


def test_dataset_without_heldout_split_reports_why(store: Store, tmp_path: Path) -> None:
    version = publish_tiny_model(store)
    images = store.load_dataset(store.get_manifest(version).dataset, split="heldout")[0]  # stored without a split
    report = evaluate(store.model_dir(version), tmp_path, RealImages(images, "held-out split"), FAST)
    assert {m["computed"] for m in report["metrics"].values()} == {False}
    assert "only 0 real image(s)" in report["metrics"]["memorization"]["reason"]
    assert "loss_curves" in report["plots"] and embedded_images(render(report, tmp_path))


def test_canceled_or_failed_evaluation(store: Store, tmp_path: Path) -> None:
    """Cancel during evaluation: no version. A crashing evaluation: the model is kept, without a report."""
    from models.gan.publish import publish
    from models.gan.training import train
    from models.platform.schemas import TrainSpec

    ds = put_dataset(store, blobs(16))
    spec = TrainSpec(dataset=ds.id, architecture="dcgan", image_size=32, width=8, latent_dim=16, batch_size=8, epochs=1)
    result = train(spec, store.load_dataset(ds.id)[0], tmp_path / "job")

    def cancel(staged: Path) -> dict:
        raise EvaluationAborted("canceled")

    def crash(staged: Path) -> dict:
        (staged / "plots").mkdir()
        raise RuntimeError("out of memory")

    with pytest.raises(EvaluationAborted):
        publish(store, result, spec, ds, "job-a", tmp_path / "job", evaluate=cancel)
    assert store.list_models() == [] and list(store.tmp_dir.iterdir()) == []
    version, _ = publish(store, result, spec, ds, "job-b", tmp_path / "job", evaluate=crash)
    manifest = store.get_manifest(version)
    assert manifest.quality == {"error": "RuntimeError: out of memory"}
    assert sorted(p.name for p in store.model_dir(version).iterdir()) == [
        "generator.onnx",
        "history.json",
        "model.json",
        "samples.png",
    ]


def test_report_routes(client: TestClient, store: Store, demo: np.ndarray) -> None:
    version = publish_tiny_model(store)  # published without an evaluation, like versions from before reports
    r = client.get(f"/models/{version}/report")
    assert r.status_code == 404 and "published before quality reports existed" in r.json()["detail"]
    assert client.get(f"/models/{version}/report.html").status_code == 404
    assert client.get("/models/v99/report").status_code == 404
    assert client.get("/models/..%2Fdatasets/report").status_code == 404

    evaluate(store.model_dir(version), store.model_dir(version), RealImages(demo[:20], "held-out split"), FAST)
    r = client.get(f"/models/{version}/report")
    assert r.status_code == 200 and r.json()["metrics"]["memorization"]["computed"] is False
    page = client.get(f"/models/{version}/report.html")
    assert page.status_code == 200 and embedded_images(page.text)
    tampered = {**r.json(), "plots": {"loss_curves": "../../../../../../etc/passwd"}}
    (store.model_dir(version) / "report.json").write_text(json.dumps(tampered))
    page = client.get(f"/models/{version}/report.html").text
    assert "(plot file missing)" in page and "root:" not in page and "data:image" not in page
    (store.model_dir(version) / "report.json").write_text("{broken")
    r = client.get(f"/models/{version}/report")
    assert r.status_code == 409 and "not valid JSON" in r.json()["detail"]


def test_cli_evaluate_on_a_folder(store: Store, settings: Settings, tmp_path: Path) -> None:
    version = publish_tiny_model(store, epochs=2)
    out = tmp_path / "report"
    cmd = [sys.executable, "-m", "drawai.cli", "evaluate", "--model", version, "--real", str(DEMO_SLICES)]
    run = subprocess.run(
        [*cmd, "--out", str(out), "--count", "30", "--metrics", "intensity_w1,memorization,c2st_auc"],
        env=worker_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "report.html" in run.stdout and "intensity_w1" in run.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["real"]["count"] == 57 and report["data"]["synthetic"]["count"] == 30
    assert report["data"]["training"]["count"] == 16  # the model's dataset, from the store
    assert set(report["metrics"]) == {"intensity_w1", "memorization", "c2st_auc"}
    assert all(m["computed"] for m in report["metrics"].values())
    assert embedded_images((out / "report.html").read_text())

    bad = subprocess.run(
        [sys.executable, "-m", "drawai.cli", "evaluate", "--model", "v42", "--out", str(tmp_path / "x")],
        env=worker_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1 and "no model version 'v42'" in bad.stderr and "v1" in bad.stderr


def fake_generator(folder: Path, table: np.ndarray, snapshot: dict | None = None) -> Path:
    """A real ONNX "generator" that returns one of ``table``'s uint8 images, picked by the argmax of ``z``.

    latent_dim = len(table), so every row is equally likely; one row makes a fully collapsed generator.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from models.platform.schemas import ModelManifest

    k, size = len(table), table.shape[-1]
    rows = (table.astype(np.float32) / 127.5 - 1.0)[:, None]  # exactly back to the same uint8 in to_uint8
    graph = helper.make_graph(
        [
            helper.make_node("ArgMax", ["z"], ["row"], axis=1, keepdims=0),
            helper.make_node("Gather", ["table", "row"], ["image"], axis=0),
        ],
        "fake",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", k])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, size, size])],
        [numpy_helper.from_array(rows, "table")],
    )
    folder.mkdir(parents=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), folder / "generator.onnx")
    manifest = ModelManifest(
        version="vfake", architecture="fake", image_size=size, latent_dim=k, conditional=False, classes={},
        dataset="ds-none", dataset_sha256="", job_id="none", spec={}, epochs=1, steps=1,
        final_losses={}, onnx_sha256="", onnx_parity_max_abs_diff=0.0, onnx_opset=17, onnx_inputs=["z"],
        library_versions={}, created="", snapshot=snapshot,
    )  # fmt: skip
    (folder / "model.json").write_text(manifest.model_dump_json())
    return folder


def test_generators_that_copy_or_collapse_are_caught_end_to_end(demo: np.ndarray, tmp_path: Path) -> None:
    """Through ONNX Runtime, the report and its page: verbatim copies of training slices, and one repeated slice."""
    from models.quality.evaluation import at_model_size

    train, held = demo[0::2], demo[1::2]
    train64 = at_model_size(train, 64)
    assert train64 is not None
    real = RealImages(held, "held-out split", train, "training split")
    config = EvalConfig(synthetic_count=60, metrics=("memorization", "diversity_msssim", "c2st_auc"))

    copier = evaluate(fake_generator(tmp_path / "copier", train64), tmp_path / "copier-report", real, config)
    memo = copier["metrics"]["memorization"]
    assert memo["likely_copies_fraction"] == 1.0 and memo["synthetic_p50"] == 0.0
    assert all(p["likely_copy"] and p["distance"] == 0.0 for p in copier["closest_pairs"])
    assert "privacy risk" in copier["summary"]["memorization"]["reading"]
    assert "Synthetic slices nearest to a training slice" in embedded_images(render(copier, tmp_path / "copier-report"))

    assert copier["collapsed"] is False
    assert not any("slabs" in n for n in copier["notes"])  # volumes held out whole: a copying test

    candidate = {"step": 40, "score": 0.9, "c2st_auc": 0.95, "diversity_ratio": 2.1, "collapsed": True}
    snapshot = {**candidate, "reason": "the lowest score", "candidates": [candidate]}
    one = fake_generator(tmp_path / "one", train64[10:11], snapshot=snapshot)
    slabs = RealImages(held, "held-out split", train, "training split", heldout_slabs=True)  # one volume's slabs
    collapsed = evaluate(one, tmp_path / "one-report", slabs, config)
    diversity = collapsed["metrics"]["diversity_msssim"]
    assert diversity["synthetic"] > 0.99 and diversity["synthetic"] > diversity["real"] + 0.3
    assert "mode collapse" in collapsed["summary"]["diversity_msssim"]["reading"]
    assert collapsed["collapsed"] is True and any(n.startswith("Mode collapse") for n in collapsed["notes"])
    assert collapsed["model"]["snapshot"]["step"] == 40  # which snapshot was published, and why
    page = render(collapsed, tmp_path / "one-report")
    assert "Mode collapse: the synthetic slices are far more alike" in page
    assert SLAB_NOTE in collapsed["notes"] and "never trained on as likely copies" in page
    assert "Published snapshot" in page and "Step 40 of 1: the lowest score" in page
