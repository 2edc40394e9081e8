"""Training techniques: conditioning, EMA, progressive growing, augmentation, extra G objectives, regularisers."""
from pathlib import Path

import pytest
import torch
import torchvision
from hydra.utils import instantiate
from PIL import Image
from torch import nn

from dcgan_lab.augment import DiffAugment, RealAugment, random_brightness, random_cutout, shift
from dcgan_lab.errors import ConfigError
from dcgan_lab.losses import feature_matching, r1_penalty
from dcgan_lab.nets.ema import ema_beta, ema_update, make_ema
from dcgan_lab.nets.perceptual import PerceptualLoss
from dcgan_lab.pipeline import build_module, train
from tests.test_training import assert_same_pixels, grid_tiles, rebuild_tiles

TINY = ["trainer.limit_train_batches=2"]


# ---- pure pieces --------------------------------------------------------------------------------
def test_feature_matching_value():
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]])   # mean (2, 3)
    fake = torch.tensor([[0.0, 0.0], [2.0, 2.0]])   # mean (1, 1)
    assert feature_matching(real, fake).item() == pytest.approx((1 + 4) / 2)


def test_ema_warmup_and_update():
    assert [ema_beta(0.999, t, 100) for t in (0, 50, 100, 500)] == pytest.approx([0.0, 0.4995, 0.999, 0.999])
    assert ema_beta(0.9, 0, 0) == 0.9
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = make_ema(net)
    assert not any(p.requires_grad for p in ema.parameters()) and not ema.training
    before = ema[0].weight.clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
        net[1].running_mean.fill_(3.0)
    ema_update(ema, net, beta=0.75)
    torch.testing.assert_close(ema[0].weight, 0.75 * before + 0.25 * net[0].weight)
    torch.testing.assert_close(ema[1].running_mean, torch.full((2,), 3.0))  # buffers copied


def test_shift_and_translation_are_exact_and_differentiable():
    x = torch.arange(16.0).view(1, 1, 4, 4).requires_grad_(True)
    out = shift(x, torch.tensor([1]), torch.tensor([-1]), fill=-1.0)  # down 1, left 1
    expected = torch.full((1, 1, 4, 4), -1.0)
    expected[0, 0, 1:, :3] = x.detach()[0, 0, :3, 1:]
    torch.testing.assert_close(out, expected)
    DiffAugment("color,translation,cutout")(x.expand(2, 3, 4, 4)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_cutout_fills_one_square_and_brightness_shifts_each_image():
    torch.manual_seed(0)
    x = torch.rand(8, 1, 16, 16) + 1  # no pixel equals the fill value 0
    out = random_cutout(x, ratio=0.5, fill=0.0)
    for image_in, image_out in zip(x, out):
        hole = image_out[0] == 0
        rows, cols = hole.any(1).nonzero().flatten(), hole.any(0).nonzero().flatten()
        assert hole[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # a filled rectangle
        assert len(rows) <= 8 and len(cols) <= 8
        torch.testing.assert_close(image_out[0][~hole], image_in[0][~hole])
    moved = random_brightness(x, 0.5) - x
    assert torch.allclose(moved, moved[:, :, :1, :1].expand_as(moved)) and moved.abs().max() <= 0.5


def test_diffaugment_ops_have_the_reference_code_magnitudes_on_images_in_minus_one_one():
    """Zhao et al. 2020's reference DiffAugment (mit-han-lab/data-efficient-gans) runs on the [-1, 1] images D sees:
    brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5), translation and cutout filling with 0."""
    torch.manual_seed(0)
    flat = torch.rand(4000, 1, 1, 1).expand(4000, 1, 8, 8) * 0.2 - 0.1  # flat grey images: color moves only brightness
    shifts = (DiffAugment("color")(flat) - flat)[:, 0, 0, 0]
    assert 0.49 < shifts.abs().max() <= 0.5 and abs(float(shifts.mean())) < 0.02
    x = torch.rand(64, 3, 16, 16) * 0.5 + 0.5  # no pixel is 0
    translated = DiffAugment("translation")(x)
    moved = ~torch.isclose(translated, x).all(dim=(1, 2, 3))
    uncovered = translated[moved] == 0  # the border a shift uncovers (all shifts are at most 2 pixels at 16x16)
    assert moved.any() and uncovered.any() and set(translated[translated < 0.5].unique().tolist()) == {0.0}


def test_diffaugment_policy_is_checked_and_takes_a_list_or_a_comma_string():
    with pytest.raises(ConfigError, match=r"^augment.diff.policy='color,rotate' must be DiffAugment ops from color, "
                                          r"translation, cutout \('rotate' is not among them\), as a list or a comma string.$"):
        DiffAugment("color,rotate")
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    torch.manual_seed(0)
    listed = DiffAugment(["translation", "cutout"])(x)
    torch.manual_seed(0)
    torch.testing.assert_close(listed, DiffAugment(" translation, cutout")(x))
    torch.manual_seed(0)
    assert not torch.equal(listed, DiffAugment("translation")(x))  # both ops ran


def test_the_readme_policy_examples_work_as_typed():
    """Each `augment.diff.policy=...` the README shows, split as the shell splits it and composed by Hydra, builds the
    DiffAugment it names (a bare `color,translation` would be a sweep to Hydra, and a list used to crash)."""
    import re
    import shlex

    from dcgan_lab.augment import policy_ops
    from tests.conftest import ROOT, compose_config

    readme = (ROOT / "README.md").read_text()
    examples = [shlex.split(e)[0] for e in re.findall(r"`([^`]*augment\.diff\.policy=[^`]*)`", readme)]
    assert len(examples) >= 2, examples
    for example in examples:
        cfg = compose_config(Path("/tmp/unused"), ["augment=diffaugment", example])
        policy = instantiate(cfg.augment.diff)
        assert len(policy.ops) == len(policy_ops(cfg.augment.diff.policy)) >= 2, example


def test_real_augment_flip_only_mirrors():
    torch.manual_seed(0)
    x = torch.rand(16, 1, 8, 8) * 2 - 1
    out = RealAugment(flip=True)(x)
    mirrored = [torch.equal(o, i.flip(2)) for o, i in zip(out, x)]
    kept = [torch.equal(o, i) for o, i in zip(out, x)]
    assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)


def test_r1_switch_adds_exactly_the_penalty(make_cfg):
    torch.manual_seed(0)
    real, fake = torch.rand(4, 1, 32, 32) * 2 - 1, torch.rand(4, 1, 32, 32) * 2 - 1
    discriminator = instantiate(make_cfg("model.d_dropout=0").model.discriminator).eval()
    losses = {}
    for weight in (0.0, 2.5):
        objective = instantiate(make_cfg(f"loss.r1_weight={weight}").loss)
        losses[weight] = objective.d_loss(discriminator, real, fake, None, None, g_step=0)[0]
    torch.testing.assert_close(losses[2.5], losses[0.0] + 2.5 * r1_penalty(discriminator, real))


def test_weight_decay_and_dropout_switches(make_cfg):
    module = build_module(make_cfg("optimizer=adamw", "optimizer.weight_decay_g=0.0", "optimizer.weight_decay_d=0.05",
                                   "model.d_dropout=0.3"))
    opt_d = module.optimizer_d(module.discriminator.parameters())
    opt_g = module.optimizer_g(module.generator.parameters())
    assert (opt_d.param_groups[0]["weight_decay"], opt_g.param_groups[0]["weight_decay"]) == (0.05, 0.0)
    dropouts = [m for m in module.discriminator.modules() if isinstance(m, nn.Dropout)]
    assert dropouts and all(m.p == 0.3 for m in dropouts)


def test_bad_technique_settings_are_one_line_errors(make_cfg):
    cases = {
        ("dataset=image_folder", "dataset.path=/nowhere", "model.conditional=true"): "needs a labelled dataset",
        ("model.conditional=true", "model.g_conditioning=film"): "model.g_conditioning='film'",
        ("model.ema_decay=1.0",): "model.ema_decay=1.0 must be in [0, 1)",
        ("model=progressive", "model.growth.fade_images=0"): "model.growth.fade_images=0",
        ("loss.feature_matching_weight=-1",): "loss.feature_matching_weight=-1",
    }
    for overrides, message in cases.items():
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            train(make_cfg(*overrides))


def test_perceptual_without_local_weights_is_one_line(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"weights_path=.*missing\.pth does not exist.*perceptual_weight=0") as info:
        train(make_cfg("loss.perceptual_weight=1", f"loss.perceptual.weights_path={tmp_path}/missing.pth"))
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def squeezenet_weights(tmp_path_factory):
    """A local torchvision weights file (random weights: the mechanics, not ImageNet features, are tested)."""
    path = tmp_path_factory.mktemp("weights") / "squeezenet1_1.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), path)
    return path


def test_perceptual_loss_on_local_weights(squeezenet_weights):
    loss = PerceptualLoss("squeezenet1_1", "features.4", str(squeezenet_weights))
    real = torch.rand(4, 1, 16, 16) * 2 - 1
    fake = (torch.rand(4, 1, 16, 16) * 2 - 1).requires_grad_(True)
    assert loss(real, real).item() == 0.0
    value = loss(real, fake)
    value.backward()
    assert value.item() > 0 and fake.grad.abs().sum() > 0
    assert not isinstance(loss, nn.Module)  # a plain object: its network stays out of checkpoints


# ---- training runs ------------------------------------------------------------------------------
def test_conditional_ema_augment_objectives_train_together(make_cfg, squeezenet_weights, monkeypatch):
    """One short run with every technique on: conditional DCGAN (concat G, projection D), EMA, real-image
    augmentation + DiffAugment, feature matching, perceptual loss, R1, dropout and weight decay in D."""
    import dcgan_lab.pipeline as pipeline

    forwards = []
    original = pipeline.build_module

    def build_and_count(cfg):
        module = original(cfg)
        module.generator.register_forward_hook(lambda g, *_: forwards.append(1) if g.training else None)
        return module

    monkeypatch.setattr(pipeline, "build_module", build_and_count)
    cfg = make_cfg(*TINY, "model.conditional=true", "model.ema_decay=0.9", "model.ema_warmup_steps=1", "augment=both",
                   "loss.feature_matching_weight=1", "loss.perceptual_weight=0.1", "loss.perceptual.network=squeezenet1_1",
                   "loss.perceptual.layer=features.4", f"loss.perceptual.weights_path={squeezenet_weights}",
                   "loss.r1_weight=1", "model.d_dropout=0.2", "optimizer.weight_decay_d=1e-4")
    result = train(cfg)
    run = Path(result["output_dir"])
    # One training forward of G per batch: the fake D saw is reused for G's update. (Grids draw from the EMA copy, and
    # the networks' table counts G's FLOPs in eval mode.)
    assert len(forwards) == 2
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    g_keys = {k[len("generator."):] for k in ckpt["state_dict"] if k.startswith("generator.")}
    ema_keys = {k[len("generator_ema."):] for k in ckpt["state_dict"] if k.startswith("generator_ema.")}
    assert g_keys and ema_keys == g_keys
    # ema_warmup_steps=1: step 0 copies G, step 1 averages with beta 0.9
    assert not torch.equal(ckpt["state_dict"]["generator_ema.stem.1.weight"], ckpt["state_dict"]["generator.stem.1.weight"])
    # One row per class: 10 rows of ceil(64 / 10) = 7 digits, 32x32 each with 2-pixel padding; row k drawn
    # by the EMA generator with label k (recomputed here from the checkpoint and fixed_noise.pt).
    assert Image.open(run / "samples" / "last.png").size == (7 * 34 + 2, 10 * 34 + 2)
    assert_same_pixels(grid_tiles(run / "samples" / "last.png", 70, nrow=7, size=32), rebuild_tiles(run, labels_per_row=True))
    assert all(torch.isfinite(torch.tensor(v)) for v in result["metrics"].values())


@pytest.mark.parametrize("overrides", [
    ["model=mlp", "norm=none"],
    ["model=resnet", "model.conditional=true", "model.d_conditioning=concat", "model.attention=true", "model.attention_res=8"],
])
def test_model_families_train(make_cfg, overrides):
    result = train(make_cfg(*TINY, *overrides))
    assert result["g_steps"] == 2 and (Path(result["output_dir"]) / "samples" / "last.png").exists()


def test_progressive_works_with_every_loss(make_cfg):
    """D and G losses (and both penalties) at a fade-in between two resolutions, for every loss pair."""
    torch.manual_seed(0)
    module = build_module(make_cfg("model=progressive", "model.growth.fade_images=64", "model.growth.stable_images=64"))
    module.images_seen = 96  # half-way through fading 8x8 in
    module._apply_growth()
    assert module.growth_state == (8, 0.5)
    real = torch.nn.functional.adaptive_avg_pool2d(torch.rand(4, 1, 32, 32) * 2 - 1, 8)
    for name in ("bce", "hinge", "wgan_gp", "lsgan"):
        objective = instantiate(make_cfg(f"loss={name}", "loss.gp_weight=1", "loss.r1_weight=1").loss)
        fake = module.generator(module.generator.sample_latent(4))
        loss_d = objective.d_loss(module.discriminator, real, fake, None, None, g_step=0)[0]
        loss_g = objective.g_loss(module.discriminator, real, fake, None, None, g_step=0)[0]
        (loss_d + loss_g).backward()
        assert torch.isfinite(loss_d) and torch.isfinite(loss_g) and fake.shape[-1] == 8, name


def test_progressive_resume_keeps_phase_and_alpha(make_cfg, tmp_path):
    grow = ["model=progressive", "dataset.batch_size=16", "model.growth.fade_images=32", "model.growth.stable_images=16",
            "trainer.limit_train_batches=3", "model.ema_decay=0.5"]
    first = train(make_cfg(*grow, run_dir=tmp_path / "a"))
    ckpt_path = Path(first["output_dir"]) / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    # 48 images seen; the last batch trained at 32 images: 8x8 fading in, alpha 16/32
    assert ckpt["images_seen"] == 48
    assert ckpt["state_dict"]["generator.current_resolution"].item() == 8
    assert ckpt["state_dict"]["generator.alpha"].item() == pytest.approx(0.5)
    assert ckpt["state_dict"]["generator_ema.current_resolution"].item() == 8
    samples = Path(first["output_dir"]) / "samples"
    assert Image.open(samples / "res_004.png").size == (8 * 6 + 2,) * 2  # 4x4 digits, 2-pixel padding
    assert Image.open(samples / "last.png").size == (8 * 10 + 2,) * 2

    resumed = train(make_cfg(*grow, "trainer.max_epochs=2", f"ckpt_path={ckpt_path}", run_dir=tmp_path / "b"))
    ckpt = torch.load(Path(resumed["output_dir"]) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    # resumed at 48 images: 3 more batches, the last at 80 images = 16x16 fading in, alpha (80-16-48)/32
    assert ckpt["images_seen"] == 96
    assert ckpt["state_dict"]["generator.current_resolution"].item() == 16
    assert ckpt["state_dict"]["generator.alpha"].item() == pytest.approx(0.5)


@pytest.mark.parametrize("loss", ["bce", "hinge", "wgan_gp", "lsgan"])
def test_progressive_trains_through_every_resolution_with_every_loss(make_cfg, loss):
    result = train(make_cfg("model=progressive", f"loss={loss}", "dataset.batch_size=16", "trainer.limit_train_batches=14",
                            "model.growth.fade_images=32", "model.growth.stable_images=32"))
    samples = Path(result["output_dir"]) / "samples"
    assert [Image.open(samples / f"res_{r:03d}.png").size[0] for r in (4, 8, 16, 32)] == [8 * (r + 2) + 2 for r in (4, 8, 16, 32)]
    assert result["metrics"]["progressive/resolution"] == 32.0


def test_a_conditional_model_on_unlabelled_data_names_every_labelled_dataset(make_cfg):
    """The labelled datasets are read from conf/dataset/ (num_classes > 0): photo_patches was missing from a
    hand-written list, and a newly added labelled dataset would have been too."""
    with pytest.raises(ConfigError) as info:
        train(make_cfg("dataset=celeba", "model.conditional=true"))  # (an image folder names dataset.labels instead)
    assert ("use dataset=cifar10 or dataset=fashion_mnist or dataset=mnist or dataset=mnist_mini or "
            "dataset=photo_patches, or model.conditional=false.") in str(info.value)
