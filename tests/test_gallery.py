"""The Fig. 4 gallery app, the per-image PSNR and the zoo's Table 3."""
import math

import numpy as np
import pytest
import torch

from analysis.apps.gallery import AttackGalleryApp, psnr_table, zoo_table
from analysis.checkpoints import read_manifest
from analysis.metrics import trigger_psnr
from analysis.metrics import psnr
from analysis.paper_results import TABLE3
from analysis.workbench import Workbench


@pytest.fixture(scope="module")
def workbench(digits):
    return Workbench("digits", progress=False, data=digits)


@pytest.fixture(scope="module")
def app(workbench):
    return AttackGalleryApp(workbench)


# ---------------------------------------------------------------------- PSNR
def test_psnr_of_identical_images_is_inf():
    x = torch.rand(2, 3, 4, 4)
    assert np.all(np.isinf(psnr(x, x.clone())))


def test_psnr_matches_the_formula_on_known_perturbations():
    benign = torch.zeros(2, 3, 4, 4)
    poisoned = benign.clone()
    poisoned[0, 1, 2, 3] = 1.0  # one of 48 values off by 1: MSE = 1/48
    poisoned[1] += 0.5  # every value off by 0.5 (exact in binary): MSE = 0.25 -> 10 log10(4) = 6.02 dB
    np.testing.assert_allclose(psnr(benign, poisoned), [10 * math.log10(48), 10 * math.log10(4)], rtol=1e-12)
    np.testing.assert_allclose(psnr(benign[1].numpy(), poisoned[1].numpy()), [10 * math.log10(4)], rtol=1e-12)


def test_psnr_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        psnr(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))


def test_mean_of_per_image_psnr_is_trigger_psnr(workbench):
    run = workbench.model("resnet18", "blended")
    benign = run.data.test.of_class_not(run.attack.target).x
    per_image = psnr(benign, run.poisoned_test.x)
    assert np.all(np.isfinite(per_image))
    assert float(np.mean(per_image)) == pytest.approx(trigger_psnr(run.attack, run.data.test, run.poisoned_test),
                                                      rel=1e-4)


def test_psnr_table_per_attack(workbench):
    table = psnr_table(workbench, attacks=["badnets", "blended"])
    assert list(table.index) == ["BadNets", "Blended"]
    run = workbench.model("resnet18", "blended")
    assert table.loc["Blended", "mean dB"] == trigger_psnr(run.attack, run.data.test, run.poisoned_test)
    assert table.loc["Blended", "images"] == len(run.poisoned_test)
    assert (table["min dB"] <= table["mean dB"]).all() and (table["mean dB"] <= table["max dB"]).all()
    with pytest.raises(ValueError, match="attacks"):
        psnr_table(workbench, attacks=["nope"])


# ---------------------------------------------------------------------- app
def test_gallery_shows_benign_poisoned_and_difference(app, workbench):
    app.set(arch="resnet18", attack="badnets", index=0, amplification=10)
    assert [trace.type for trace in app.figure.data] == ["image"] * 3
    run = workbench.model("resnet18", "badnets")
    benign = run.data.test.of_class_not(run.attack.target).x[0]
    poisoned = run.poisoned_test.x[0]
    as_rgb = lambda t: (t.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # noqa: E731
    np.testing.assert_array_equal(np.asarray(app.figure.data[0].z), as_rgb(benign))
    np.testing.assert_array_equal(np.asarray(app.figure.data[1].z), as_rgb(poisoned))
    np.testing.assert_array_equal(np.asarray(app.figure.data[2].z), as_rgb(((poisoned - benign).abs() * 10).clamp(0, 1)))
    text = app.text()
    assert f"{float(psnr(benign, poisoned)[0]):.1f} dB" in text
    assert f"{trigger_psnr(run.attack, run.data.test, run.poisoned_test):.1f} dB" in text
    assert "attack target: class 1" in text


def test_gallery_follows_attack_index_and_amplification(app):
    app.set(arch="resnet18", attack="badnets", index=0, amplification=10)
    before_text, before = app.text(), [np.asarray(t.z).copy() for t in app.figure.data]
    app.set(attack="wanet", index=5)
    after = [np.asarray(t.z) for t in app.figure.data]
    assert app.text() != before_text and "attack target: class 0" in app.text()
    assert not np.array_equal(before[0], after[0]) and not np.array_equal(before[1], after[1])
    app.set(index=6)
    assert not np.array_equal(after[0], np.asarray(app.figure.data[0].z))
    weak = np.asarray(app.figure.data[2].z).astype(int)
    poisoned = np.asarray(app.figure.data[1].z).copy()
    app.set(amplification=20)
    strong = np.asarray(app.figure.data[2].z).astype(int)
    assert np.all(strong >= weak) and np.any(strong > weak)  # only the difference panel brightens
    np.testing.assert_array_equal(np.asarray(app.figure.data[1].z), poisoned)


def test_gallery_index_range_follows_the_target(app, workbench):
    for attack in ("badnets", "wanet"):  # targets 1 and 0: different numbers of non-target images
        app.set(attack=attack)
        run = workbench.model("resnet18", attack)
        assert app.controls["index"].max == len(run.poisoned_test) - 1
        assert f"mean over the {len(run.poisoned_test)} poisoned" in app.text()


def test_gallery_rejects_bad_arguments(workbench):
    with pytest.raises(ValueError, match="attack"):
        AttackGalleryApp(workbench, attack="nope")
    with pytest.raises(ValueError, match="arch"):
        AttackGalleryApp(workbench, arch="vgg")
    with pytest.raises(ValueError, match="index"):
        AttackGalleryApp(workbench, index=10_000)
    with pytest.raises(ValueError, match="amplification"):
        AttackGalleryApp(workbench, amplification=0)
    with pytest.raises(TypeError, match="workbench"):
        AttackGalleryApp("digits")


# ---------------------------------------------------------------------- Table 3
def test_zoo_table_has_every_manifest_entry_beside_the_paper():
    table = zoo_table()
    entries = read_manifest()["entries"]
    assert sorted(table["name"]) == sorted(entries)
    assert list(table.columns) == ["name", "arch", "attack", "settings", "MA %", "ASR %", "paper MA %", "paper ASR %"]
    row = table.set_index("name").loc["digits-resnet18-badnets"]
    assert row["MA %"] == pytest.approx(100 * entries["digits-resnet18-badnets"]["metrics"]["ma"])
    assert row["ASR %"] == pytest.approx(100 * entries["digits-resnet18-badnets"]["metrics"]["asr"])
    assert (row["paper MA %"], row["paper ASR %"]) == TABLE3["cifar10-resnet18"]["badnets"]
    assert tuple(table.set_index("name").loc["digits-mobilenetv2-wanet", ["paper MA %", "paper ASR %"]]) == \
        TABLE3["gtsrb-mobilenetv2"]["wanet"]
    variants = table[table["name"].str.contains("-r0|-adaptive|-clean")]
    assert variants[["paper MA %", "paper ASR %"]].isna().all().all()
    assert table.set_index("name").loc["digits-resnet18-clean", "ASR %"] != table.set_index("name").loc[
        "digits-resnet18-clean", "ASR %"]  # NaN: a clean model has no ASR
    assert table.iloc[0]["name"] == "digits-resnet18-clean"


def test_zoo_table_of_an_empty_folder_raises(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint manifest"):
        zoo_table(tmp_path)
