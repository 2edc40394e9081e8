"""Bad input: one clear line (what is wrong, what to do), exit status 2, nothing that looks like a result."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dcgan_lab.pipeline import main, train
from tests.conftest import ROOT, run_cli

# What a run leaves behind; a refused single run leaves none of it (Hydra's own .hydra/ and log aside).
RESULTS = ("config.yaml", "metrics.csv", "checkpoints", "samples", "fixed_noise.pt", "status.json")


def image_folder(root: Path, n: int = 20, corrupt: int = 0, mode: str = "RGB") -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    channels = 3 if mode == "RGB" else 1
    for i in range(n):
        pixels = rng.integers(0, 256, (20, 20, channels), dtype=np.uint8).squeeze()
        Image.fromarray(pixels, mode).save(root / f"img{i:02d}.png")
    for i in range(corrupt):
        good = (root / "img00.png").read_bytes()
        (root / f"broken{i}.png").write_bytes(good[: len(good) // 3])  # a truncated download
    return root


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory) -> Path:
    """A real checkpoint of the FAST model (ngf=8, ndf=8), and a truncated copy of it."""
    from tests.conftest import FAST, compose_config

    run = tmp_path_factory.mktemp("ckpt") / "run"
    train(compose_config(run, FAST + ["trainer.limit_train_batches=1"]))
    ckpt = run / "checkpoints/last.ckpt"
    truncated = run / "truncated.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[:5000])
    return ckpt


# (case, overrides, exact start of the message after "error: ")
CASES = [
    ("negative lr", ["optimizer.lr_g=-1"], "optimizer.lr_g=-1 must be > 0 (DCGAN uses 2e-4)."),
    ("lr not a number", ["optimizer.lr_d=fast"], "optimizer.lr_d='fast' must be a number."),
    ("betas outside [0,1)", ["optimizer.betas=[0.5,1.0]"], "optimizer.betas=[0.5, 1.0] must be two numbers in [0, 1)"),
    ("batch size 0", ["dataset.batch_size=0"], "dataset.batch_size=0 must be an integer >= 1."),
    ("image size not a power of two", ["dataset.image_size=48"], "dataset.image_size=48 is not supported: use a power of two"),
    ("attention resolution not in the network", ["model.attention=true", "model.attention_res=64"],
     "model.attention_res=64 is not a resolution inside the network for image_size=32: use one of [4, 8, 16]."),
    ("n_critic < 1", ["training.n_critic=0"], "training.n_critic=0 must be an integer >= 1."),
    ("max_epochs 0", ["trainer.max_epochs=0"], "trainer.max_epochs=0 must be an integer >= 1, or -1 for no limit."),
    ("label smoothing with a loss without targets", ["loss=ragan", "training.real_label=0.9"],
     "label smoothing/flipping (training.real_label, fake_label, flip_prob) needs a loss with targets (loss=bce or "
     "loss=lsgan); the chosen loss's D loss, ragan_d, has none."),
    ("consistency regularisation without its transform", ["loss.consistency_real_weight=10", "loss.consistency_augment=null"],
     "loss.consistency_real_weight / consistency_fake_weight need a transform T to be consistent under: set "
     "loss.consistency_augment (conf/config.yaml's default shifts by up to 4 pixels), or set both weights to 0."),
    ("consistency shift of negative pixels", ["loss.consistency_fake_weight=10", "loss.consistency_augment.crop_padding=-2"],
     "loss.consistency_augment.crop_padding=-2 must be an integer >= 0 (pixels of shift)."),
    ("guard lr_factor", ["callbacks.divergence_guard.lr_factor=2"], "callbacks.divergence_guard.lr_factor=2 must be in (0, 1)"),
    ("required folder not given", ["dataset=image_folder"], "dataset.path must be set: add `dataset.path=...` to the command line."),
    ("missing dataset folder", ["dataset=image_folder", "dataset.path=/no/such/folder"],
     "dataset.path=/no/such/folder is not a folder; point dataset.path at a folder of images"),
    ("empty dataset folder", ["dataset=image_folder", "dataset.path={empty}"], "dataset.path={empty} holds no images"),
    ("corrupt image, on_corrupt=error", ["dataset=image_folder", "dataset.path={corrupt}", "dataset.on_corrupt=error", "dataset.image_size=16"],
     "cannot read image {corrupt}/broken0.png (OSError); remove it or set dataset.on_corrupt=skip"),
    ("grayscale data, RGB config", ["dataset.channels=3"], "dataset.channels=3 but mnist_mini images have 1 channel(s); set dataset.channels=1"),
    ("checkpoint of another architecture", ["model.ngf=16", "ckpt_path={ckpt}"],
     "checkpoint {ckpt} was saved from a different architecture: shape differs for generator."),
    ("truncated checkpoint", ["ckpt_path={truncated}"], "cannot read checkpoint {truncated} ("),
    ("checkpoint path that does not exist", ["ckpt_path=/no/such.ckpt"], "checkpoint /no/such.ckpt does not exist;"),
    ("metrics setting", ["metrics=default", "metrics.n_samples=0"], "metrics.n_samples=0 must be an integer >= 1"),
    ("W&B log_model offline", ["logger=wandb", "+logger.wandb.log_model=all"],
     "logger.wandb.log_model=all uploads checkpoints, which an offline W&B run cannot do; log in"),
    ("mlp with instance norm", ["model=mlp", "norm=instance"],
     "model=mlp cannot use norm.g=instance_norm: on the MLP's 1x1 feature maps it normalises each of its 32 features "
     "over a single value, so its output is constant and every sample would be the same; "
     "with model=mlp use norm=batch, layer or none (norm=group needs a width of 3 or more: model.ngf >= 3)."),
    ("mlp with group norm on 8 features", ["model=mlp", "norm=group", "model.ngf=4", "model.ndf=1"],
     "model=mlp cannot use norm.d=group_norm: on the MLP's 1x1 feature maps it normalises each of its 8 features "
     "over a single value, so its output is constant and every sample would be the same; "
     "with model=mlp use norm=batch, layer or none (norm=group needs a width of 3 or more: model.ndf >= 3)."),
    ("progressive growth past the data's size", ["model=progressive", "model.growth.final_resolution=64"],
     "model.growth.final_resolution=64 must be dataset.image_size=32: progressive growing ends at the data's size; "
     "set dataset.image_size and leave model.growth.final_resolution to follow it."),
    ("misspelt DiffAugment op", ["augment=diffaugment", "augment.diff.policy=colour"],
     "augment.diff.policy='colour' must be DiffAugment ops from color, translation, cutout ('colour' is not among "
     "them), as a list or a comma string, e.g. 'augment.diff.policy=[color,translation]'."),
    ("yes/no value that is neither", ["augment=real", "augment.real.flip=maybe"], "augment.real.flip='maybe' must be true or false."),
    ("precision Lightning does not know", ["trainer.precision=17"],
     "Lightning's Trainer refused the trainer settings (conf/trainer, trainer.*): Precision 17 is invalid."),
    ("a GPU on a machine without one", ["trainer.accelerator=gpu"] if not torch.cuda.is_available() else ["trainer.devices=abc"],
     "Lightning's Trainer refused the trainer settings (conf/trainer, trainer.*): "),
    ("fewer classes than the labels", ["dataset.num_classes=1"],
     "dataset.num_classes=1 does not fit mnist_mini: its train images are labelled 0..9 (10 classes); set "
     "dataset.num_classes=10 (or 0 to use no labels)"),
    ("more classes than the labels", ["dataset.num_classes=20"],
     "dataset.num_classes=20 does not fit mnist_mini: its train images are labelled 0..9 (10 classes); set "
     "dataset.num_classes=10 (or 0 to use no labels)"),
    ("conditional image folder without labels", ["dataset=image_folder", "dataset.path={few}", "model.conditional=true"],
     "model.conditional=true needs a labelled dataset, but dataset image_folder has no classes (dataset.num_classes=0): "
     "set dataset.labels=subfolders (each first-level subfolder of dataset.path is a class), or model.conditional=false."),
    ("labels from subfolders, none there", ["dataset=image_folder", "dataset.path={few}", "dataset.labels=subfolders",
                                            "model.conditional=true"],
     "model.conditional=true needs a labelled dataset, but dataset image_folder has no classes (dataset.num_classes=0): "
     "dataset.labels=subfolders found no class subfolders in dataset.path={few}; put each class's images in a "
     "subfolder of its own, or set model.conditional=false."),
    ("a class folder without images", ["dataset=image_folder", "dataset.path={classes}", "dataset.labels=subfolders"],
     "dataset.path={classes}: class folder 'empty' holds no images (1 of the 2 classes in dataset.class_names have "
     "none); give it images or remove it"),
    pytest.param("fewer images than a batch", ["dataset=image_folder", "dataset.path={few}", "dataset.image_size=16"],
                 "image_folder has 5 training images, fewer than dataset.batch_size=16"),
]


@pytest.mark.parametrize("case, overrides, message", CASES, ids=[c.values[0] if hasattr(c, "values") else c[0] for c in CASES])
def test_bad_input_gets_one_line_exit_2_and_no_result(case, overrides, message, make_cfg, tmp_path, capsys, trained_checkpoint):
    places = {
        "empty": tmp_path / "empty",
        "corrupt": tmp_path / "corrupt",
        "ckpt": trained_checkpoint,
        "truncated": trained_checkpoint.parent.parent / "truncated.ckpt",
        "few": tmp_path / "few",
        "classes": tmp_path / "classes",
    }
    (tmp_path / "empty").mkdir()
    if "{corrupt}" in " ".join(overrides):
        image_folder(tmp_path / "corrupt", corrupt=1)
    if "{few}" in " ".join(overrides):
        image_folder(tmp_path / "few", n=5)
    if "{classes}" in " ".join(overrides):
        image_folder(tmp_path / "classes" / "full", n=5)
        (tmp_path / "classes" / "empty").mkdir()
    overrides = [o.format(**places) for o in overrides]
    cfg = make_cfg(*overrides, f"paths.cache_dir={tmp_path / 'cache'}")
    with pytest.raises(SystemExit) as exit_info:
        main(cfg)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()  # (a decoding progress bar may come before)
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:], lines
    assert errors[0].startswith("error: " + message.format(**places)), errors[0]
    run = tmp_path / "run"
    assert [name for name in RESULTS if (run / name).exists()] == []


def test_an_error_raised_where_hydra_instantiates_an_object_is_still_one_line(make_cfg, tmp_path, capsys, monkeypatch):
    # The schema refuses this value before anything is built; with that check off, GenerativeMetrics refuses it in
    # its constructor and Hydra's instantiate wraps the error in its own exception: still the lab's one line.
    from dcgan_lab.config import settled

    monkeypatch.setattr("dcgan_lab.pipeline.validate", settled)  # the config's values, unchecked
    with pytest.raises(SystemExit) as exit_info:
        main(make_cfg("metrics=default", "metrics.n_samples=0"))
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: metrics.n_samples=0 must be an integer >= 1") and len(lines) == 1, lines
    assert not (tmp_path / "run" / "status.json").exists()


def test_corrupt_images_are_skipped_with_a_count_by_default(make_cfg, tmp_path, caplog):
    folder = image_folder(tmp_path / "images", n=20, corrupt=2)
    cfg = make_cfg("dataset=image_folder", f"dataset.path={folder}", "dataset.image_size=16", f"paths.cache_dir={tmp_path / 'cache'}",
                   "trainer.limit_train_batches=1")
    with caplog.at_level(logging.WARNING, logger="dcgan_lab.data.sources"):
        result = train(cfg)
    warnings = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert warnings == [f"skipped 2 unreadable image file(s), e.g. {folder / 'broken0.png'}"]
    assert result["g_steps"] == 1


def test_a_cached_decode_reports_its_unreadable_files_again(make_cfg, tmp_path, capsys, caplog, monkeypatch):
    """The second run on a folder reads the decoded cache: `on_corrupt=error` still stops at the unreadable file with
    the first run's line and writes nothing, and the default `skip` warns again, whether the decoded array comes
    from this process or from the cache on disk (a new process: the in-memory copies cleared)."""
    import weakref

    from dcgan_lab.data import sources

    folder = image_folder(tmp_path / "images", n=20, corrupt=1)
    common = ["dataset=image_folder", f"dataset.path={folder}", "dataset.image_size=16",
              f"paths.cache_dir={tmp_path / 'cache'}", "trainer.limit_train_batches=1"]
    refused = f"error: cannot read image {folder / 'broken0.png'} (OSError); remove it or set dataset.on_corrupt=skip"
    skipped = f"skipped 1 unreadable image file(s), e.g. {folder / 'broken0.png'}"

    def warnings():
        return [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]

    with caplog.at_level(logging.WARNING, logger="dcgan_lab.data.sources"):
        held, _ = sources.image_folder(str(folder), cache_dir=str(tmp_path / "cache"), image_size=16)  # decodes, caches
        assert warnings() == [skipped] and len(held) == 20
        caplog.clear()
        assert sources.image_folder(str(folder), cache_dir=str(tmp_path / "cache"), image_size=16)[0] is held
        assert warnings() == [skipped]  # this process's copy
        for new_process in (False, True):
            if new_process:
                monkeypatch.setattr(sources, "_DECODED", weakref.WeakValueDictionary())
                monkeypatch.setattr(sources, "_UNREADABLE", {})
            capsys.readouterr()
            run = tmp_path / f"refused-{new_process}"
            with pytest.raises(SystemExit) as exit_info:
                main(make_cfg(*common, "dataset.on_corrupt=error", run_dir=run))
            assert exit_info.value.code == 2
            assert capsys.readouterr().err.strip().splitlines() == [refused]
            assert [name for name in RESULTS if (run / name).exists()] == []
        caplog.clear()
        assert train(make_cfg(*common))["g_steps"] == 1  # from the cache on disk
    assert warnings() == [skipped]
    assert sorted(p.suffix for p in (tmp_path / "cache" / "images").iterdir()) == [".json", ".npy"]  # one cache


def test_unknown_option_and_key_on_the_command_line(tmp_path):
    """A misspelt key or option: the lab's one line with the closest valid name, exit 2, nothing written."""
    unknown_key = run_cli(["model.atention=true", f"hydra.run.dir={tmp_path / 'a'}"], cwd=ROOT, timeout=120)
    assert unknown_key.returncode == 2
    assert unknown_key.stderr.strip().splitlines() == [
        unknown_key.stderr.strip().splitlines()[-1]]
    assert unknown_key.stderr.startswith("error: model.atention is not a config key: did you mean model.attention? (model has: ")
    unknown_option = run_cli(["-m", "loss=bce,hing", f"hydra.sweep.dir={tmp_path / 'b'}"], cwd=ROOT, timeout=120)
    assert unknown_option.returncode == 2
    losses = ", ".join(sorted(p.stem for p in (ROOT / "conf" / "loss").glob("*.yaml")))  # a new loss file included
    assert unknown_option.stderr.strip() == (
        f"error: loss=hing is not an option of loss: did you mean loss=hinge? (options: {losses}).")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_command_line_check_names_the_closest_key_and_lets_good_lines_through():
    from dcgan_lab.command_line import command_line_problem

    assert command_line_problem(["training.n_critc=2"]).startswith(
        "training.n_critc is not a config key: did you mean training.n_critic?")
    assert command_line_problem(["model=resnt"]).startswith("model=resnt is not an option of model: did you mean model=resnet?")
    assert command_line_problem(["evaluate_me=1"]).startswith("evaluate_me is not a config key: (the config has: ")
    good = ["-m", "loss=hinge", "model.attention=true", "+sweep=mnist_ablation", "seed=0,1,2", "+extra_note=hello",
            "hydra/launcher=local", "optimizer.betas=[0.3,0.999]"]
    assert command_line_problem(good) is None
    assert command_line_problem(["model=progressive", "model.growth.fade_images=10"]) is None
    assert command_line_problem(["model=progressive", "model.attention=true"]).startswith("model.attention is not a key of model=progressive")
    assert command_line_problem(["ckpt=run/last.ckpt", "metrics.n_samples=100"], "evaluate") is None
    assert command_line_problem(["metrics.n_sample=100"], "evaluate").startswith("metrics.n_sample is not a config key: did you mean metrics.n_samples?")


def test_command_line_check_reads_option_lists_and_skips_the_values_of_hydras_flags():
    """README's `'logger=[wandb,tensorboard]'` (a list of options) was refused as the option "['wandb', 'tensorboard']";
    `--cfg job loss=hinj` skipped the check ("job" is --cfg's value, not an override) and got Hydra's own report."""
    from dcgan_lab.command_line import command_line_problem

    assert command_line_problem(["logger=[wandb,tensorboard]", "loss=hinge"]) is None
    assert command_line_problem(["logger=[wandb,tensorbord]"]).startswith(
        "logger=tensorbord is not an option of logger: did you mean logger=tensorboard?")
    assert command_line_problem(["--cfg", "job", "loss=hinj"]).startswith("loss=hinj is not an option of loss")
    assert command_line_problem(["--info", "defaults", "model.atention=true"]).startswith("model.atention is not a config key")


def test_a_key_of_another_option_names_the_options_that_have_it():
    """`model=mlp model.attention=true` was told "did you mean model.latent_dim? ... to add a new key write
    +model.attention=..." (which mlp would ignore); `dataset.path=...` without dataset=image_folder likewise."""
    from dcgan_lab.command_line import command_line_problem

    assert command_line_problem(["model=mlp", "model.attention=true"]) == (
        "model.attention is not a key of model=mlp: only model=dcgan and model=resnet have it "
        "(e.g. model=dcgan model.attention=...).")
    assert command_line_problem(["dataset.path=/data/art"]) == (
        "dataset.path is not a key of dataset=mnist_mini: only dataset=image_folder has it "
        "(e.g. dataset=image_folder dataset.path=...).")
    assert command_line_problem(["model.atention=true"]).startswith("model.atention is not a config key: did you mean model.attention?")


def test_a_group_chosen_with_the_wrong_plus_gets_the_form_to_write():
    """`+loss=hinge` got Hydra's "Multiple values for loss. To override a value use 'override loss: hinge'" (a line
    for a defaults list, not a command line); `sweep=x` Hydra's three lines. Both now name the form to write."""
    from dcgan_lab.command_line import command_line_problem

    assert command_line_problem(["+ablation=hinge"]) == (
        "+ablation=hinge: ablation is already in the defaults of conf/config.yaml, so choose it without the '+': "
        "ablation=hinge.")
    assert command_line_problem(["sweep=mnist_ablation,stabilizers"]) == (
        "sweep=mnist_ablation: sweep is not in the defaults of conf/config.yaml, so append it with a '+': "
        "+sweep=mnist_ablation.")
    assert command_line_problem(["+dataset=mnist"], "evaluate").startswith("+dataset=mnist: dataset is already in the defaults of conf/evaluate.yaml")
    assert command_line_problem(["loss=hinge"], "evaluate") == (
        "loss=hinge: conf/evaluate.yaml has no loss group (its groups: dataset, metrics, paths).")
    assert command_line_problem(["-m", "+sweep=mnist_ablation", "ablation=hinge", "+seed_study=mnist_hinge"]) is None


def test_a_named_sweep_without_multirun_is_refused():
    """`python train.py +sweep=mnist_ablation` (no -m) trained one 20-epoch run with the defaults, in outputs/, as if
    the sweep had started."""
    from dcgan_lab.command_line import command_line_problem

    assert command_line_problem(["+sweep=mnist_ablation", "trainer.max_epochs=2"]) == (
        "+sweep=mnist_ablation is a sweep: start it with -m (python train.py -m +sweep=mnist_ablation); without -m "
        "it trains one run with the defaults.")
    assert command_line_problem(["--multirun", "+sweep=mnist_ablation"]) is None


def test_paths_with_override_syntax_are_quoted_and_lists_stay_lists(tmp_path):
    """A sweep job's folder (`ablation=hinge,seed=0`) passes as one path; `ckpt=[a,b]` is two checkpoints."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from dcgan_lab.command_line import quote_paths
    from dcgan_lab.metrics.checkpoints import find_checkpoints

    job, other = tmp_path / "ablation=hinge,seed=0" / "last.ckpt", tmp_path / "plain" / "last.ckpt"
    for path in (job, other):
        path.parent.mkdir()
        path.touch()
    cases = {f"ckpt={job}": [job], f"ckpt=['{job}',{other}]": [job, other], f"ckpt=[{other},{other.parent}]": [other]}
    for arg, expected in cases.items():
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("evaluate", overrides=quote_paths([arg]))
        assert find_checkpoints(cfg.ckpt) == expected, arg
    # A folder name with an apostrophe was Hydra's LexerNoViableAltException (quoted in single quotes, or not at all).
    art = "/data/Van Gogh's letters, 1888"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=quote_paths(["dataset=image_folder", f"dataset.path={art}"]))
    GlobalHydra.instance().clear()
    assert cfg.dataset.path == art
    # Run folders too (how resume=true names its run), and letters beyond ASCII were Hydra's lexer error as well.
    mine, sweep, ckpt = "/home/José/runs/été, 2", "multirun/a=b/Straße", "/home/José/last.ckpt"
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=quote_paths([f"hydra.run.dir={mine}", f"hydra.sweep.dir={sweep}",
                                                       f"ckpt_path={ckpt}"]), return_hydra_config=True)
    GlobalHydra.instance().clear()
    assert (cfg.hydra.run.dir, cfg.hydra.sweep.dir, cfg.ckpt_path) == (mine, sweep, ckpt)


def test_a_bad_value_is_refused_before_the_training_stack_loads(tmp_path):
    """`python train.py optimizer.lr_g=-1`: the one line comes before Lightning is imported (about 10 s of this
    machine's 14 before), and nothing the run would write is there."""
    import os
    import subprocess

    from tests.conftest import PYTHON

    run = tmp_path / "bad"
    proc = subprocess.run([PYTHON, "-X", "importtime", str(ROOT / "train.py"), "optimizer.lr_g=-1", f"hydra.run.dir={run}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "WANDB_MODE": "offline"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "dcgan_lab.config" in imported and "hydra" in imported  # so the check below can fail
    assert not {"lightning", "dcgan_lab.pipeline", "torchvision"} & imported
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    assert errors == ["error: optimizer.lr_g=-1 must be > 0 (DCGAN uses 2e-4)."]
    assert not [name for name in RESULTS if (run / name).exists()]


@pytest.mark.slow  # two CLI processes importing lightning: ~25 s
def test_resume_without_the_run_folder_names_the_newest_run_to_continue(tmp_path):
    """`python train.py resume=true` alone gets a new timestamped folder, which can never hold a checkpoint: one
    line naming the option to add and the newest run folder here that has one, instead of a fresh 20-epoch run."""
    older, newer = (tmp_path / "outputs" / "2026-01-01" / name / "checkpoints" for name in ("10-00-00", "11-00-00"))
    for folder in (older, newer, tmp_path / "outputs" / "2026-01-01" / "12-00-00"):  # the last one: no checkpoint
        folder.mkdir(parents=True)
    (older / "last.ckpt").write_bytes(b"")
    time.sleep(0.01)
    (newer / "last.ckpt").write_bytes(b"")
    proc = run_cli(["resume=true"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: resume=true continues the run in hydra.run.dir, but this run got a new folder (")
    assert lines[0].endswith(f"e.g. hydra.run.dir={newer.parent} (the newest with a checkpoint).")
    assert not list((tmp_path / "outputs").rglob("status.json"))
    # A sweep's job in a new sweep folder: the job is refused and recorded, and the sweep says which option to add.
    sweep = run_cli(["-m", "resume=true", "seed=0"], cwd=tmp_path)
    assert "resume=true continues each job of a sweep in its own folder, but this sweep got a new one: add " \
           "hydra.sweep.dir=<the sweep's folder>" in sweep.stdout + sweep.stderr


def test_an_image_too_large_for_pil_is_skipped_or_named_like_an_unreadable_one(tmp_path, caplog, monkeypatch):
    """A scan over twice PIL's MAX_IMAGE_PIXELS (a gigapixel painting in an art folder) stopped the run with PIL's
    DecompressionBombError traceback; it is an unreadable file like the others (here: the limit made tiny)."""
    import PIL.Image

    from dcgan_lab.data.sources import image_folder as read_folder
    from dcgan_lab.errors import DataError

    folder = image_folder(tmp_path / "art", n=3)  # 20x20
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(folder / "huge.png")
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 500)  # 40x40 = 1600 > 2 x 500; 20x20 = 400 passes
    with caplog.at_level(logging.WARNING, logger="dcgan_lab.data.sources"):
        images, _ = read_folder(str(folder), image_size=16, channels=3, cache_dir=str(tmp_path / "a"))
    assert len(images) == 3 and "skipped 1 unreadable image file(s), e.g. " in caplog.text
    with pytest.raises(DataError, match=r"cannot read image .*huge.png \(DecompressionBombError\)"):
        read_folder(str(folder), image_size=16, channels=3, cache_dir=str(tmp_path / "b"), on_corrupt="error")


def test_a_folder_of_mixed_image_modes_decodes_each_at_its_own_grey_level(tmp_path):
    """A WikiArt-like folder (nested class folders; RGB, greyscale, RGBA, palette, CMYK and 16-bit greyscale, PNG and
    JPEG) decodes every file to the level it shows: a 16-bit PNG was clipped at 255 by PIL, all but white."""
    from dcgan_lab.data.sources import image_folder
    from dcgan_lab.export import read_samples

    grey = np.full((24, 24, 3), 100, dtype=np.uint8)
    files = {"a/rgb.jpg": Image.fromarray(grey), "a/b/grey.png": Image.fromarray(grey[..., 0]),
             "rgba.png": Image.fromarray(np.dstack([grey, np.full_like(grey[..., :1], 255)]), "RGBA"),  # opaque: test_data.py has transparency
             "c/palette.png": Image.fromarray(grey).convert("P"), "c/cmyk.jpg": Image.fromarray(grey).convert("CMYK"),
             "c/wide.png": Image.fromarray(grey[..., 0].astype(np.uint16) * 257)}
    for name, image in files.items():
        (tmp_path / "art" / name).parent.mkdir(parents=True, exist_ok=True)
        image.save(tmp_path / "art" / name)
    assert Image.open(tmp_path / "art/c/wide.png").mode == "I;16"
    for channels in (1, 3):
        images, _ = image_folder(str(tmp_path / "art"), image_size=16, channels=channels, cache_dir=str(tmp_path / "cache"))
        assert images.shape == (6, channels, 16, 16)
        assert (images.float().mean(dim=(1, 2, 3)) - 100).abs().max() <= 2, images.float().mean(dim=(1, 2, 3))
    (tmp_path / "art/c/cmyk.jpg").unlink()
    (tmp_path / "art/c/palette.png").unlink()
    files["a/b/grey.png"].save(tmp_path / "art/c/grey.png")
    read, _ = read_samples(tmp_path / "art" / "c")  # evaluate.py images=: the same reading
    assert read.shape == (2, 1, 24, 24) and read.float().mean(dim=(1, 2, 3)).tolist() == [100.0, 100.0]


@pytest.mark.slow  # over 10 s on 2 cores: make test-slow
def test_the_error_line_of_a_run_refused_mid_setup_is_in_its_train_log(tmp_path):
    """A SLURM user reading only <run>/train.log sees why the run ended: the same `error:` line as stderr, once."""
    run = tmp_path / "run"
    proc = run_cli(["dataset=image_folder", f"dataset.path={tmp_path / 'no_such_folder'}", f"hydra.run.dir={run}",
                    "logger=csv", "metrics=none"], cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    line = f"error: dataset.path={tmp_path / 'no_such_folder'} is not a folder; point dataset.path at a folder of images"
    assert proc.stderr.strip().splitlines() == [line]
    assert [entry.split(" - ", 1)[1] for entry in (run / "train.log").read_text().splitlines() if " - error: " in entry] == [line]
    assert line not in proc.stdout  # the console shows it once
