"""The seed study (issue 15): the reference study's two tables over seeds. Welch's t-test against the baseline on
hand-written job folders with known answers, the reference numbers beside the lab's, the line where metrics
disagree (the lr_1e-4 trap), one table per dataset, the sweeps' composition, the photo_patches stand-in and
CelebA read from an unpacked img_align_celeba folder."""
import csv
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from scipy import stats

from dcgan_lab.data import sources
from dcgan_lab.errors import DataError
from dcgan_lab.pipeline import main
from dcgan_lab.report import build_report, welch
from tests.conftest import FAST, compose_config, run_cli
from tests.test_report import effect_rows, read_report_csv

COLUMNS = ["epoch", "g_step", "loss/d", "loss/g", "cluster/silhouette", "cluster/compactness",
           "classifier/classes_covered", "classifier/fid"]
DATASETS = {"mnist_mini": {"name": "mnist_mini", "image_size": 32},
            "photo_patches": {"name": "photo_patches", "image_size": 64}}


def write_job(sweep: Path, num: int, arm: str, seed: int, finals: dict[str, float], experiment: str, ablation: str,
              dataset: str) -> Path:
    """A finished job as `python train.py -m +sweep=seed_study` leaves it (what the report reads)."""
    job = sweep / f"+seed_study={arm},seed={seed}"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"+seed_study={arm}", f"seed={seed}", "+sweep=seed_study"]))
    choices = {"seed_study": arm, "experiment": experiment, "ablation": ablation, "dataset": dataset}
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"num": num}, "runtime": {"choices": choices}}}))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"dataset": DATASETS[dataset], "seed": seed}))
    with open(job / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerow({"epoch": 0, "g_step": 10, "loss/d": 1.0, "loss/g": 2.0})
        writer.writerow({"epoch": 0, "g_step": 10, **finals})
    (job / "status.json").write_text('{"status": "ok", "train_time_s": 10}')
    (job / "samples").mkdir()
    Image.fromarray(np.full((8, 8), 40 * num % 255, dtype=np.uint8)).save(job / "samples" / "last.png")
    return job


# Table 1 by hand: hinge separates clearly from the baseline (p = 0.0036 below); beta1_0.3 overlaps it.
# lr_1e-4 is the trap of the 4-epoch mnist_ablation report: the best silhouette and compactness, yet the fewest
# classes and the worst classifier FID (grey texture covering 6 of 10 classes).
SILHOUETTE = {"baseline": [0.05, 0.06, 0.07], "beta1_0.3": [0.06, 0.08, 0.04], "hinge": [0.10, 0.11, 0.12],
              "lr_1e-4": [0.15, 0.16, 0.17]}
COMPACTNESS = {"baseline": [0.12, 0.13, 0.14], "beta1_0.3": [0.13, 0.12, 0.17], "hinge": [0.11, 0.12, 0.13],
               "lr_1e-4": [0.01, 0.02, 0.03]}
CLASSES = {"baseline": [10, 10, 10], "beta1_0.3": [10, 10, 9], "hinge": [10, 10, 10], "lr_1e-4": [6, 7, 6]}
CLASSIFIER_FID = {"baseline": [20, 22, 24], "beta1_0.3": [21, 25, 23], "hinge": [15, 16, 17], "lr_1e-4": [300, 310, 320]}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    sweep = tmp_path_factory.mktemp("seed_study") / "multirun"
    num = 0
    for ablation in SILHOUETTE:
        arm = f"mnist_{ablation}"
        for seed in range(3):
            finals = {"cluster/silhouette": SILHOUETTE[ablation][seed], "cluster/compactness": COMPACTNESS[ablation][seed],
                      "classifier/classes_covered": CLASSES[ablation][seed], "classifier/fid": CLASSIFIER_FID[ablation][seed]}
            write_job(sweep, num, arm, seed, finals, "reference_mnist", ablation, "mnist_mini")
            num += 1
    # Table 2 on the stand-in: two seeds for the baseline, one for SiLU; no Inception FID logged.
    for arm, ablation, seed, fid in [("faces_baseline", "baseline", 0, 50.0), ("faces_baseline", "baseline", 1, 54.0),
                                     ("faces_silu", "silu", 0, 80.0)]:
        write_job(sweep, num, arm, seed, {"classifier/fid": fid, "cluster/silhouette": 0.1}, "reference_faces", ablation,
                  "photo_patches")
        num += 1
    build_report(sweep)
    return sweep


def welch_by_hand(a, b):
    """t = (mean_a - mean_b) / sqrt(s_a^2/n_a + s_b^2/n_b), Welch-Satterthwaite degrees of freedom, two-sided p."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    t = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return 2 * stats.t.sf(abs(t), df)


def test_welch_matches_the_formula_and_scipy_on_a_clear_and_an_unclear_case():
    clear = welch(SILHOUETTE["hinge"], SILHOUETTE["baseline"])
    assert clear.p == pytest.approx(welch_by_hand(SILHOUETTE["hinge"], SILHOUETTE["baseline"]), rel=1e-9)
    assert clear.p == pytest.approx(0.0036, abs=5e-5)  # t = 0.05 / sqrt(2 * 0.0001 / 3) = 6.12 on 4 df
    assert clear.significant and clear.text == "p=0.0036"
    unclear = welch(SILHOUETTE["beta1_0.3"], SILHOUETTE["baseline"])
    assert unclear.p == pytest.approx(stats.ttest_ind([0.06, 0.08, 0.04], [0.05, 0.06, 0.07], equal_var=False).pvalue)
    assert unclear.p == pytest.approx(1.0)  # equal means: no evidence at all
    assert not unclear.significant and unclear.text == "n.s. (p=1)"
    assert welch([0.1], [0.05, 0.06]).text == "n<2: no test"
    assert welch([10, 10, 10], [10, 10, 10]).text == "n.s. (identical)"
    assert welch([6, 6, 6], [10, 10, 10]).p is None  # no spread on either side: t is undefined


def row_of(md: str, label: str) -> list[str]:
    line = next(line for line in md.splitlines() if line.startswith(f"| `{label}` |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_table_1_shows_mean_std_n_the_test_and_the_reference_beside_each_metric(study):
    md = (study / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| variant |") and "silhouette" in line)
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    silhouette, compactness = columns.index("cluster/silhouette"), columns.index("cluster/compactness")
    hinge, beta, base = row_of(md, "+seed_study=mnist_hinge"), row_of(md, "+seed_study=mnist_beta1_0.3"), row_of(md, "+seed_study=mnist_baseline")
    assert base[silhouette] == "0.06 ± 0.01 (3) · ref 0.0615"  # the baseline is not tested against itself
    # Three variants tested on silhouette: Holm multiplies hinge's p (the 2nd smallest of 0.00026, 0.0036, 1) by 2.
    assert hinge[silhouette] == "0.11 ± 0.01 (3) · p=0.0036 (Holm p=0.0072) · ref 0.1074"
    assert beta[silhouette] == "0.06 ± 0.02 (3) · n.s. (p=1) · ref 0.0674"
    assert beta[compactness].endswith("· ref 0.1693")
    # lr_1e-4 is not a row of the reference study (its change was lr 2e-4): no reference number beside it.
    trap = row_of(md, "+seed_study=mnist_lr_1e-4")
    assert "ref" not in " ".join(trap)
    table = read_report_csv(study / "report.csv")
    p = float(table["+seed_study=mnist_hinge"]["cluster/silhouette_p"])
    assert p == pytest.approx(stats.ttest_ind(SILHOUETTE["hinge"], SILHOUETTE["baseline"], equal_var=False).pvalue)
    assert float(table["+seed_study=mnist_hinge"]["cluster/silhouette_ref"]) == 0.1074
    assert table["+seed_study=mnist_baseline"]["cluster/silhouette_p"] == ""


def test_bold_only_for_the_best_mean_that_is_also_significant(study):
    md = (study / "report.md").read_text()
    # lr_1e-4: the best silhouette, and significantly above the baseline -> bold.
    assert "**0.16 ± 0.01 (3)** · p<0.001" in md
    # hinge: the best classifier FID (15-17 vs the baseline's 20-24: p = 0.02) -> bold.
    hinge_fid = stats.ttest_ind(CLASSIFIER_FID["hinge"], CLASSIFIER_FID["baseline"], equal_var=False).pvalue
    assert hinge_fid < 0.05 and f"**16 ± 1 (3)** · p={hinge_fid:.2g}" in md
    # classes covered: baseline and hinge tie at 10 -> no single winner, nothing bold in that column.
    classes = read_report_csv(study / "report.csv")
    assert not any("classifier/classes_covered" in row["significant_best_in"] for row in classes.values())


def test_the_metrics_disagree_line_names_the_trap(study):
    md = (study / "report.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("- `")]
    trap = [line for line in lines if "mnist_lr_1e-4" in line]
    assert len(trap) == 1
    assert "best by cluster/silhouette, cluster/compactness but worst by classifier/fid, classifier/classes_covered" in trap[0]
    assert not any("mnist_hinge" in line for line in lines)  # best FID, never worst: nothing to flag


def test_a_disagreement_that_no_test_backs_says_it_may_be_seed_noise(study, tmp_path):
    """Two variants whose seeds overlap: each metric still ranks one best and the other worst, so both get a
    disagree line, and each says that no significant difference stands behind it. The trap above is significant
    (p < 0.001 on silhouette): its line has no such sentence. A sweep outside the reference study explains no `ref`."""
    sweep = tmp_path / "multirun"
    rows = {"baseline": ([0.05, 0.07, 0.06], [20, 24, 22]), "hinge": ([0.06, 0.08, 0.05], [25, 19, 23])}
    num = 0
    for ablation, (silhouette, fid) in rows.items():
        for seed in range(3):
            write_job(sweep, num, f"mnist_{ablation}", seed, {"cluster/silhouette": silhouette[seed],
                      "classifier/fid": fid[seed]}, "none", ablation, "mnist_mini")
            num += 1
    build_report(sweep)
    md = (sweep / "report.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("- `")]
    assert len(lines) == 2, lines
    hinge = next(line for line in lines if "mnist_hinge" in line)
    assert "best by cluster/silhouette but worst by classifier/fid" in hinge
    assert all(line.endswith("None of these rankings rests on a significant difference from the baseline over "
                             "seeds: they may be seed noise.") for line in lines)
    assert "`ref` =" not in md
    study_md = (study / "report.md").read_text()
    assert "`ref` = the reference study's number for the same setting and change: its published tables" in study_md
    trap = next(line for line in study_md.splitlines() if "mnist_lr_1e-4`:" in line)
    assert "seed noise" not in trap


def test_each_dataset_is_its_own_table_with_its_own_baseline_and_a_named_stand_in(study):
    md = (study / "report.md").read_text()
    assert "## Table 1 of the reference study" in md and "## Table 2 of the reference study" in md
    faces = md[md.index("## Table 2"):]
    assert "OFFLINE STAND-IN, NOT FACES" in faces and "`dataset=photo_patches`, 64x64" in faces
    assert "classifier/fid" in faces and "fid/* (Inception)" in faces
    base, silu = row_of(faces, "+seed_study=faces_baseline"), row_of(faces, "+seed_study=faces_silu")
    assert base[-1] == "not logged · ref 128.01" and silu[-1] == "not logged · ref 237.24"
    assert "52 ± 2.828 (2)" in base  # tested against its own baseline, not Table 1's
    assert "80 (1) · n<2: no test" in silu  # one seed: no spread to show (not "± 0")
    one_seed = read_report_csv(study / "report.csv")["+seed_study=faces_silu"]
    assert (one_seed["classifier/fid_mean"], one_seed["classifier/fid_std"], one_seed["classifier/fid_n"]) == ("80.0", "", "1")
    assert "was not logged by these jobs" in faces
    assert "5,000 real MNIST digits" in md[: md.index("## Table 2")]


def test_effects_draw_each_table_against_its_own_baseline(study, drawn):
    """effects.png gives each table its own rows of panels, titled by the table, each against its own baseline."""
    build_report(study)
    fig, _ = drawn["effects.png"]
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert [t for t in panels if t.startswith("Table 1")][:2] == [
        "Table 1 of the reference study: classifier/fid (lower is better)",
        "Table 1 of the reference study: classifier/classes_covered (higher is better)"]
    faces = panels["Table 2 of the reference study: classifier/fid (lower is better)"]
    assert [t.get_text() for t in faces.get_yticklabels()] == ["+seed_study=faces_baseline", "+seed_study=faces_silu"]
    rows = effect_rows(faces)
    assert rows["baseline"] == pytest.approx([52.0, 52.0])  # its own baseline's mean, not Table 1's
    assert rows[0]["seeds"] == [50, 54] and rows[1]["seeds"] == [80] and rows[1]["mean"] == [80]
    assert "interval" not in rows[1]  # one seed: no interval to draw
    digits = panels["Table 1 of the reference study: classifier/fid (lower is better)"]
    assert [t.get_text() for t in digits.get_yticklabels()][0] == "+seed_study=mnist_baseline"
    assert len(digits.get_yticklabels()) == len(SILHOUETTE)


def test_seed_study_sweeps_compose_to_the_reference_settings(tmp_path):
    cfg = compose_config(tmp_path / "a", ["+sweep=seed_study"])
    arms = cfg.hydra.sweeper.params["+seed_study"].split(",")
    assert len(arms) == 8 and cfg.hydra.sweeper.params.seed == "0,1,2"
    arm = lambda name: compose_config(tmp_path / name, [f"+seed_study={name}"])  # noqa: E731
    base, lr, hinge, beta = arm("mnist_baseline"), arm("mnist_lr_2e-4"), arm("mnist_hinge"), arm("mnist_beta1_0.3")
    assert (base.dataset.name, base.optimizer.lr_g, base.optimizer.lr_d, base.trainer.max_epochs) == ("mnist_mini", 1e-4, 1e-4, 5)
    assert (lr.optimizer.lr_g, lr.optimizer.lr_d) == (2e-4, 2e-4)  # the ablation applies after the experiment
    assert (hinge.optimizer.lr_g, hinge.loss.d._target_) == (1e-4, "dcgan_lab.losses.hinge_d")
    assert (list(beta.optimizer.betas), beta.optimizer.lr_g) == ([0.3, 0.999], 1e-4)
    faces = {name: arm(f"faces_{name}") for name in ("baseline", "self_attention", "silu", "layer_norm")}
    assert {(c.dataset.name, c.dataset.image_size, c.dataset.channels) for c in faces.values()} == {("photo_patches", 64, 3)}
    assert faces["self_attention"].model.attention and not faces["baseline"].model.attention
    assert faces["silu"].activation.g._target_ == "torch.nn.SiLU"
    assert faces["layer_norm"].norm.g._target_ == "dcgan_lab.nets.blocks.layer_norm"
    # One table alone, on the real data when the user has it.
    full = compose_config(tmp_path / "b", ["+sweep=seed_study_mnist", "dataset=mnist", "ablation=lr_2e-4"])
    assert (full.dataset.name, full.optimizer.lr_g) == ("mnist", 2e-4)
    celeba = compose_config(tmp_path / "c", ["+sweep=seed_study_faces", "dataset=celeba"])
    assert (celeba.dataset.name, celeba.dataset.crop, celeba.trainer.max_epochs) == ("celeba", 178, 5)


def test_photo_patches_are_the_bundled_photographs_cut_into_labelled_patches():
    train, labels = sources.photo_patches("train", image_size=32)
    test, test_labels = sources.photo_patches("test", image_size=32)
    assert train.shape == (5890, 3, 32, 32) and test.shape == (656, 3, 32, 32) and train.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == [1838, 1840, 2212]  # china, flower, grace_hopper
    assert set(test_labels.tolist()) == {0, 1, 2}
    # The first training patch: china.jpg's 96x96 square at (x=24, y=0) (patch 0 is held out), resized.
    with Image.open(sources.photo_files()[0]) as photo:
        expected = np.asarray(photo.convert("RGB").crop((24, 0, 120, 96)).resize((32, 32), Image.Resampling.BICUBIC))
    assert np.array_equal(train[0].permute(1, 2, 0).numpy(), expected)
    half = len(train) // 2
    assert torch.equal(train[half], train[0].flip(-1))  # the second half: the same patches mirrored


def _celeba_like(folder: Path, count: int) -> None:
    """178x218 images: a red band in the top 20 rows, blue in the bottom 20, green between (what a 178 crop keeps)."""
    folder.mkdir(parents=True)
    for i in range(count):
        pixels = np.zeros((218, 178, 3), dtype=np.uint8)
        pixels[:20, :, 0] = 255
        pixels[20:198, :, 1] = 255
        pixels[198:, :, 2] = 255
        Image.fromarray(pixels).save(folder / f"{i + 1:06d}.jpg", quality=100, subsampling=0)


def test_celeba_from_an_unpacked_img_align_celeba_folder_with_the_tutorial_crop(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gdown", None)  # no gdown, no network: the folder alone must do
    _celeba_like(tmp_path / "data" / "celeba" / "img_align_celeba", 4)
    images, labels = sources.celeba(str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"), image_size=16, crop=178)
    assert images.shape == (4, 3, 16, 16) and labels is None
    assert images[:, 1].float().mean() > 240 and images[:, 0].float().max() < 30 and images[:, 2].float().max() < 30
    taller, _ = sources.celeba(str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"), image_size=16, crop=None)
    assert torch.equal(taller, images)  # 178 is the largest centred square of 178x218: the same framing
    (tmp_path / "data" / "celeba" / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 0\n000003.jpg 1\n000004.jpg 2\n")
    train, _ = sources.celeba(str(tmp_path / "data"), split="train", cache_dir=str(tmp_path / "cache"), image_size=16)
    valid, _ = sources.celeba(str(tmp_path / "data"), split="test", cache_dir=str(tmp_path / "cache"), image_size=16)
    assert (len(train), len(valid)) == (2, 1)


def test_celeba_without_images_and_without_gdown_is_one_line_naming_both_ways(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gdown", None)
    with pytest.raises(DataError) as info:
        sources.celeba(str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"))
    message = str(info.value)
    assert "\n" not in message and "pip install -e '.[celeba]'" in message and "img_align_celeba" in message
    cfg = compose_config(tmp_path / "run", FAST + ["dataset=celeba", f"paths.data_dir={tmp_path / 'data'}"])
    with pytest.raises(SystemExit) as exit_info:
        main(cfg)
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "gdown" in errors[0] and "img_align_celeba" in errors[0]


@pytest.mark.slow
def test_real_seed_study_sweep_then_report_has_both_tables(tmp_path):
    sweep_dir = tmp_path / "multirun"
    tiny = ["model.ngf=8", "model.ndf=8", "dataset.batch_size=16", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
            "logger=csv", "callbacks.progress_bar=null", "metrics.n_samples=64", "metrics.figures=false",
            "metrics.classifier_epochs=1", f"paths.cache_dir={tmp_path / 'cache'}"]
    result = run_cli(["-m", "+sweep=seed_study", "+seed_study=mnist_baseline,mnist_hinge,faces_baseline,faces_silu",
                      "seed=0,1", *tiny, f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(list(sweep_dir.rglob("status.json"))) == 8
    md = (build_report(sweep_dir)["report.md"]).read_text()
    assert "## Table 1 of the reference study" in md and "## Table 2 of the reference study" in md
    assert "· ref 0.1074" in md and "ref 237.24" in md and "OFFLINE STAND-IN, NOT FACES" in md
