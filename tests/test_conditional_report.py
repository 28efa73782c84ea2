"""A conditional model's quality report (per class, the utility test) and the whole path through a worker.

Real ONNX graphs through ONNX Runtime, real labelled slices (the labelled demo), a real worker and Redis.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from models.platform.settings import Settings
from models.platform.store import Store
from models.quality.evaluation import EvalConfig, RealImages, evaluate
from models.report.page import render
from tests.conftest import spawn_worker
from tests.test_jobs import TINY, finish

LABELLED = Path(__file__).resolve().parent.parent / "data" / "demo" / "mni152_lesions"


def labelled_demo() -> tuple[np.ndarray, np.ndarray]:
    """The labelled demo's slices at 64 px and their classes (0 no, 1 yes)."""
    images, labels = [], []
    for index, name in enumerate(("no", "yes")):
        for p in sorted((LABELLED / name).glob("*.png")):
            images.append(np.asarray(Image.open(p).convert("L").resize((64, 64), Image.Resampling.BOX)))
            labels.append(index)
    return np.stack(images), np.array(labels, np.int64)


def conditional_fake(folder: Path, table: np.ndarray, collapsed: np.ndarray) -> Path:
    """A real ONNX conditional "generator": class 0 returns the ``table`` row picked by argmax(z); class 1 always
    returns the one image ``collapsed`` (a class that collapsed while the other did not)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from models.platform.schemas import LabelInfo, ModelManifest

    k, size = len(table), table.shape[-1]
    rows = (table.astype(np.float32) / 127.5 - 1.0)[:, None]
    one = (collapsed.astype(np.float32) / 127.5 - 1.0)[None, None]
    graph = helper.make_graph(
        [
            helper.make_node("ArgMax", ["z"], ["row"], axis=1, keepdims=0),
            helper.make_node("Gather", ["table", "row"], ["varied"], axis=0),
            helper.make_node("Equal", ["label", "yes"], ["is_yes"]),
            helper.make_node("Reshape", ["is_yes", "shape"], ["mask"]),
            helper.make_node("Where", ["mask", "one", "varied"], ["image"]),
        ],
        "fake-conditional",
        [
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", k]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
        ],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, size, size])],
        [
            numpy_helper.from_array(rows, "table"),
            numpy_helper.from_array(one, "one"),
            numpy_helper.from_array(np.array(1, np.int64), "yes"),
            numpy_helper.from_array(np.array([-1, 1, 1, 1], np.int64), "shape"),
        ],
    )
    folder.mkdir(parents=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), folder / "generator.onnx")
    labels = [LabelInfo(name="no", index=0, train_images=40), LabelInfo(name="yes", index=1, train_images=20)]
    manifest = ModelManifest(
        version="vfake", architecture="fake", image_size=size, latent_dim=k, conditional=True,
        classes={"no": 57, "yes": 29}, labels=labels, dataset="ds-none", dataset_sha256="", job_id="none", spec={},
        epochs=1, steps=1, final_losses={}, onnx_sha256="", onnx_parity_max_abs_diff=0.0, onnx_opset=17,
        onnx_inputs=["z", "label"], library_versions={}, created="",
    )  # fmt: skip
    (folder / "model.json").write_text(manifest.model_dump_json())
    return folder


def test_a_class_that_collapsed_is_caught_while_the_other_is_not(tmp_path: Path) -> None:
    images, labels = labelled_demo()
    held = np.zeros(len(images), bool)
    held[np.r_[20:28, 57 + 8 : 57 + 13]] = True  # a slab of each class
    train_x, train_y, held_x, held_y = images[~held], labels[~held], images[held], labels[held]
    model = conditional_fake(tmp_path / "model", train_x[train_y == 0], train_x[train_y == 1][3])
    real = RealImages(held_x, "held-out", train_x, "training", heldout_labels=held_y, train_labels=train_y)
    config = EvalConfig(synthetic_count=60, metrics=("diversity_msssim", "memorization"), utility_seeds=2)
    report = evaluate(model, tmp_path / "report", real, config)

    no, yes = report["classes"]["no"], report["classes"]["yes"]
    assert (no["counts"]["synthetic"], yes["counts"]["synthetic"]) == (40, 20)  # the training proportions
    assert (no["counts"]["heldout"], yes["counts"]["heldout"]) == (8, 5)
    assert no["collapsed"] is False and yes["collapsed"] is True
    assert yes["metrics"]["diversity_msssim"]["synthetic"] > 0.99
    assert report["collapsed_classes"] == ["yes"]
    assert any("Mode collapse in class(es) yes" in n for n in report["notes"])
    assert no["metrics"]["memorization"]["likely_copies_fraction"] == 1.0  # class 0 returns training slices

    utility = report["utility"]
    assert utility["skipped"] is False and utility["seeds_run"] == 2 and utility["minority"] == "yes"
    assert set(utility["arms"]) == {"real", "real+synthetic", "synthetic"}
    assert utility["verdict"] in ("helped", "hurt", "no clear effect") and utility["summary"]
    page = render(report, tmp_path / "report")
    assert "Per class" in page and "Does synthetic data help a classifier?" in page
    assert utility["summary"].split(":")[0][:40] in page.replace("&#39;", "'")


def test_an_unconditional_model_on_labelled_data_says_why_there_is_no_utility_test(tmp_path: Path) -> None:
    from tests.test_report import fake_generator

    images, labels = labelled_demo()
    model = fake_generator(tmp_path / "model", images[::3])
    real = RealImages(images[1::2], "held-out", images[::2], "training", heldout_labels=labels[1::2],
                      train_labels=labels[::2])  # fmt: skip
    report = evaluate(model, tmp_path / "report", real, EvalConfig(synthetic_count=20, metrics=("intensity_w1",)))
    assert report["classes"] is None
    assert report["utility"]["skipped"] is True and "not conditional" in report["utility"]["why"]
    assert "Not tested" in render(report, tmp_path / "report")


@pytest.mark.slow
def test_conditional_job_through_a_worker(client: TestClient, store: Store, settings: Settings) -> None:
    """Upload the labelled demo, train a tiny conditional model with a burst worker, generate a class."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(LABELLED.rglob("*.png")):
            zf.write(p, p.relative_to(LABELLED).as_posix())
    ds = client.post("/datasets", files={"file": ("lesions.zip", buf.getvalue(), "application/zip")}).json()
    assert set(ds["classes"]) == {"no", "yes"}  # (the slices beside held-out slabs are kept out)
    spec = {**TINY, "dataset": ds["id"], "epochs": 2, "conditional": True}
    job_id = client.post("/jobs/train", json=spec).json()["id"]
    finish(spawn_worker(settings.model_copy(update={"utility_budget_s": 0.0})))  # the utility test's 2 seeds only
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "finished", job
    version = job["model_version"]
    manifest = store.get_manifest(version)
    assert [(c.name, c.index) for c in manifest.labels or []] == [("no", 0), ("yes", 1)]
    report = client.get(f"/models/{version}/report").json()
    assert set(report["classes"]) == {"no", "yes"} and report["utility"]["skipped"] is False
    assert client.post(f"/models/{version}/activate").status_code == 200  # this API process serves it now
    r = client.post("/generate", params={"label": "yes", "count": 2, "seed": 0, "format": "json"})
    assert r.status_code == 200 and [e["class"] for e in r.json()["images"]] == ["yes", "yes"]
