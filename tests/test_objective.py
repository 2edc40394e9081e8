"""The GAN objective as composed by Hydra: each option reaches the numbers, each extra term is exactly its hand sum.

Objectives and networks are built from the real config (`loss=...`, `training.*`, `augment=...`), so a YAML that
forgot to pass an option, or an objective that dropped a term, fails here.
"""
from pathlib import Path

import pytest
import torch
import torchvision
from hydra.utils import instantiate
from torch import nn
from torch.testing import assert_close

from dcgan_lab import losses
from dcgan_lab.config import flatten
from dcgan_lab.augment import DiffAugment, RealAugment
from dcgan_lab.data.datamodule import to_float
from dcgan_lab.nets.perceptual import PerceptualLoss
from dcgan_lab.pipeline import train
from tests.conftest import CONF_DIR

TINY = ["model.ngf=8", "model.ndf=8", "model.d_dropout=0"]


@pytest.fixture
def parts(make_cfg):
    """parts(*overrides) -> (objective, D in eval mode, real, fake) for 4 images of 32x32."""

    def build(*overrides):
        cfg = make_cfg(*TINY, *overrides)
        torch.manual_seed(0)
        discriminator = instantiate(cfg.model.discriminator).eval()
        real, fake = torch.rand(4, 1, 32, 32) * 2 - 1, torch.rand(4, 1, 32, 32) * 2 - 1
        return instantiate(cfg.loss), discriminator, real, fake

    return build


def d_loss(objective, discriminator, real, fake, g_step=0, seed=1):
    torch.manual_seed(seed)
    return objective.d_loss(discriminator, real, fake, None, None, g_step)


def g_loss(objective, discriminator, real, fake, g_step=0, seed=1):
    torch.manual_seed(seed)
    return objective.g_loss(discriminator, real, fake, None, None, g_step)[0]


@pytest.mark.parametrize("name, pair, relativistic", [
    ("bce", "bce", False), ("hinge", "hinge", False), ("wgan_gp", "wasserstein", False), ("lsgan", "lsgan", False),
    ("ragan", "ragan", True), ("ralsgan", "ralsgan", True),
])
def test_each_loss_option_is_its_loss_pair(parts, name, pair, relativistic):
    objective, D, real, fake = parts(f"loss={name}", "loss.gp_weight=0")
    loss, stats = d_loss(objective, D, real, fake)
    assert_close(loss, getattr(losses, f"{pair}_d")(D(real), D(fake)))
    with_real = {"real_logits": D(real)} if relativistic else {}  # a relativistic G judges its fakes against D(x)
    assert_close(g_loss(objective, D, real, fake), getattr(losses, f"{pair}_g")(D(fake), **with_real))
    assert_close(stats["D(x)"], D(real).mean())
    assert_close(stats["D(G(z))"], D(fake).mean())


def test_gradient_penalty_is_its_weight_times_the_penalty_on_the_same_interpolates(parts):
    objective, D, real, fake = parts("loss=wgan_gp", "loss.gp_weight=10")
    torch.manual_seed(1)
    penalty = losses.gradient_penalty(D, real, fake)
    loss, stats = d_loss(objective, D, real, fake)
    assert_close(loss, losses.wasserstein_d(D(real), D(fake)) + 10 * penalty)
    assert_close(stats["penalty/gradient"], penalty)  # logged before its weight
    assert objective.gp_weight == 10 and (10 * losses.gradient_penalty(D, real, fake)).abs() > 1e-3  # a term that counts


def test_r1_is_its_weight_times_the_penalty(parts):
    objective, D, real, fake = parts("loss=hinge", "loss.r1_weight=5")
    loss, stats = d_loss(objective, D, real, fake)
    assert_close(loss, losses.hinge_d(D(real), D(fake)) + 5 * losses.r1_penalty(D, real))
    assert_close(stats["penalty/r1"], losses.r1_penalty(D, real))


def test_consistency_terms_are_their_weights_times_d_s_change_under_a_shift(parts):
    """bCR: D's loss + 10 E[(D(x) - D(T(x)))^2] + 5 E[(D(G(z)) - D(T(G(z))))^2], T the shift the config names
    (drawn in that order: reals, then fakes)."""
    objective, D, real, fake = parts("loss.consistency_real_weight=10", "loss.consistency_fake_weight=5")
    with torch.no_grad():  # a freshly initialised D gives every image nearly the same logit: spread them out
        for weight in D.parameters():
            weight.mul_(5)
    shift = RealAugment(crop_padding=4, clamp=False)
    torch.manual_seed(1)
    on_real = (D(shift(real)) - D(real)).pow(2).mean()
    on_fake = (D(shift(fake)) - D(fake)).pow(2).mean()
    expected = losses.bce_d(D(real), D(fake)) + 10 * on_real + 5 * on_fake
    loss, stats = d_loss(objective, D, real, fake)
    assert_close(loss, expected)
    assert_close(stats["penalty/consistency_real"], on_real)
    assert_close(stats["penalty/consistency_fake"], on_fake)
    assert on_real > 1e-2 and on_fake > 1e-2  # both terms count
    real_only, *_ = parts("loss.consistency_real_weight=10")  # CR-GAN: reals only
    assert_close(d_loss(real_only, D, real, fake)[0], losses.bce_d(D(real), D(fake)) + 10 * on_real)
    assert_close(g_loss(objective, D, real, fake), losses.bce_g(D(fake)))  # G's loss has no consistency term


def test_consistency_trains_d_only_and_its_shift_moves_without_clipping(make_cfg):
    """The term's gradient reaches D's weights, never the images (G is not pushed by it, even through a
    differentiable T), and the config's T only moves pixels: every output pixel is an input pixel of the same image,
    shifted by at most 4 in x and y, edges repeated, values outside [-1, 1] (instance noise) kept."""
    torch.manual_seed(0)
    D = nn.Sequential(nn.Flatten(), nn.Linear(64, 1))
    images = (torch.randn(6, 1, 8, 8) * 2).requires_grad_(True)
    penalty = losses.consistency_penalty(D, images, D(images).detach(), DiffAugment("translation"))
    penalty.backward()
    assert images.grad is None and D[1].weight.grad.abs().sum() > 0
    shift = instantiate(make_cfg().loss.consistency_augment)
    torch.manual_seed(3)
    moved = shift(images.detach())
    padded = torch.nn.functional.pad(images.detach(), (4, 4, 4, 4), mode="replicate")
    for i in range(6):
        offsets = [(dy, dx) for dy in range(9) for dx in range(9)
                   if torch.equal(moved[i], padded[i, :, dy:dy + 8, dx:dx + 8])]
        assert len(offsets) == 1
    assert moved.abs().max() > 1  # not clamped
    assert len({tuple(moved[i].flatten()[:3].tolist()) for i in range(6)}) > 1


def test_feature_matching_adds_its_weight_times_the_feature_distance(parts):
    objective, D, real, fake = parts("loss.feature_matching_weight=3")
    fake_logits, fake_features = D(fake, with_features=True)
    _, real_features = D(real, with_features=True)
    expected = losses.bce_g(fake_logits) + 3 * losses.feature_matching(real_features, fake_features)
    loss, stats = objective.g_loss(D, real, fake, None, None, 0)
    assert_close(loss, expected)
    assert_close(stats["penalty/feature_matching"], losses.feature_matching(real_features, fake_features))
    assert losses.feature_matching(real_features, fake_features) > 0


def test_perceptual_adds_its_weight_times_the_frozen_network_distance(parts, tmp_path):
    weights = tmp_path / "squeezenet1_1.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), weights)
    objective, D, real, fake = parts("loss.perceptual_weight=0.5", "loss.perceptual.network=squeezenet1_1",
                                     "loss.perceptual.layer=features.4", f"loss.perceptual.weights_path={weights}")
    reference = PerceptualLoss("squeezenet1_1", "features.4", str(weights))
    expected = losses.bce_g(D(fake)) + 0.5 * reference(real, fake)
    loss, stats = objective.g_loss(D, real, fake, None, None, 0)
    assert_close(loss, expected)
    assert_close(stats["penalty/perceptual"], reference(real, fake))
    assert reference(real, fake) > 0


@pytest.mark.parametrize("overrides, logged", [
    ([], []),
    (["loss=wgan_gp"], ["penalty/gradient"]),
    (["loss.r1_weight=1", "loss.feature_matching_weight=1"], ["penalty/r1", "penalty/feature_matching"]),
    (["ablation=bcr", "loss=ragan"], ["penalty/consistency_real", "penalty/consistency_fake"]),
])
def test_the_scalars_logged_are_the_penalties_that_are_on(parts, overrides, logged):
    """d_loss and g_loss log each term that is on, and only those; penalty_names (what the captured step makes
    room for) names the same."""
    objective, D, real, fake = parts(*overrides)
    d_stats, g_stats = logged_scalars(objective, D, real, fake)
    assert sorted([*d_stats, *g_stats]) == sorted(["D(x)", "D(G(z))", *logged])


def test_every_weight_in_the_loss_block_logs_its_penalty(parts, make_cfg, tmp_path):
    """Every `loss.*_weight` of conf/config.yaml, a new regulariser's included, set at once: each adds one logged
    penalty, and penalty_names (which the captured step reads) agrees with what the losses log."""
    weights = [key for key in make_cfg().loss if key.endswith("_weight")]
    assert len(weights) >= 6
    squeezenet = tmp_path / "squeezenet1_1.pth"
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), squeezenet)
    objective, D, real, fake = parts(*[f"loss.{key}=1" for key in weights], "loss.perceptual.network=squeezenet1_1",
                                     "loss.perceptual.layer=features.4", f"loss.perceptual.weights_path={squeezenet}")
    d_stats, g_stats = logged_scalars(objective, D, real, fake)
    assert len([name for name in {**d_stats, **g_stats} if name.startswith("penalty/")]) == len(weights)


def logged_scalars(objective, D, real, fake) -> tuple[dict, dict]:
    _, d_stats = d_loss(objective, D, real, fake)
    _, g_stats = objective.g_loss(D, real, fake, None, None, 0)
    assert objective.penalty_names == {"d": [n for n in d_stats if n.startswith("penalty/")], "g": list(g_stats)}
    assert all(torch.isfinite(v) and v.dim() == 0 and not v.requires_grad for v in {**d_stats, **g_stats}.values())
    return d_stats, g_stats


def test_without_the_perceptual_term_no_network_is_loaded(parts):
    objective, *_ = parts("loss.perceptual.weights_path=/nonexistent/vgg16.pth")  # weight 0: never opened
    assert objective.perceptual is None


def test_instance_noise_is_added_to_what_d_sees_and_anneals_to_zero(parts):
    objective, D, real, fake = parts("training.instance_noise=0.3", "training.instance_noise_anneal_steps=10")
    assert [objective.noise_sigma(t) for t in (0, 5, 10, 20)] == pytest.approx([0.3, 0.15, 0.0, 0.0])
    torch.manual_seed(1)
    noisy_real = real + 0.15 * torch.randn_like(real)
    noisy_fake = fake + 0.15 * torch.randn_like(fake)
    assert_close(d_loss(objective, D, real, fake, g_step=5)[0], losses.bce_d(D(noisy_real), D(noisy_fake)))
    assert_close(d_loss(objective, D, real, fake, g_step=10)[0], losses.bce_d(D(real), D(fake)))


def test_label_smoothing_and_flipping_set_the_targets(parts):
    objective, D, real, fake = parts("training.real_label=0.9", "training.fake_label=0.1", "training.flip_prob=0.4")
    torch.manual_seed(1)
    flip = torch.rand(4) < 0.4
    real_t = torch.where(flip, torch.tensor(0.1), torch.tensor(0.9))
    fake_t = torch.where(flip, torch.tensor(0.9), torch.tensor(0.1))
    expected = losses.bce_d(D(real), D(fake), real_target=real_t, fake_target=fake_t)
    assert_close(d_loss(objective, D, real, fake)[0], expected)
    assert 0 < int(flip.sum()) < 4  # this seed flips some targets and not others
    smoothed_only, *_ = parts("training.real_label=0.9")
    assert_close(d_loss(smoothed_only, D, real, fake)[0], losses.bce_d(D(real), D(fake), real_target=0.9))


def test_diffaugment_reaches_every_image_d_sees(parts):
    objective, D, real, fake = parts("augment=diffaugment")
    assert isinstance(objective.augment, DiffAugment)
    torch.manual_seed(1)
    augmented_real, augmented_fake = objective.augment(real), objective.augment(fake)
    assert_close(d_loss(objective, D, real, fake)[0], losses.bce_d(D(augmented_real), D(augmented_fake)))
    torch.manual_seed(1)
    expected_g = losses.bce_g(D(objective.augment(fake)))
    assert_close(g_loss(objective, D, real, fake), expected_g)
    assert not torch.equal(augmented_real, real)


@pytest.mark.parametrize("option, augmented", [("real", True), ("both", True), ("diffaugment", False), ("none", False)])
def test_real_augmentation_is_applied_to_batches_by_the_datamodule(make_cfg, option, augmented):
    datamodule = instantiate(make_cfg(f"augment={option}").dataset)
    images = datamodule.split("train").images[:8]
    labels = torch.arange(8)
    torch.manual_seed(0)
    out, out_labels = datamodule.on_after_batch_transfer((images, labels), 0)
    assert out.dtype == torch.float32 and torch.equal(out_labels, labels)
    assert isinstance(datamodule.augment, RealAugment) == augmented
    if augmented:
        torch.manual_seed(0)
        assert_close(out, datamodule.augment(to_float(images)))
        assert not torch.equal(out, to_float(images))
    else:
        assert torch.equal(out, to_float(images))


# ---- networks get what the config chose ------------------------------------------------------------
@pytest.mark.parametrize("option, g_type, d_type", [
    ("dcgan", nn.ReLU, nn.LeakyReLU), ("relu", nn.ReLU, nn.ReLU), ("leaky_relu", nn.LeakyReLU, nn.LeakyReLU),
    ("silu", nn.SiLU, nn.SiLU), ("gelu", nn.GELU, nn.GELU), ("elu", nn.ELU, nn.ELU),
])
@pytest.mark.parametrize("model", ["dcgan", "resnet", "mlp"])
def test_the_chosen_activation_is_in_both_networks(make_cfg, option, g_type, d_type, model):
    cfg = make_cfg(f"model={model}", f"activation={option}")
    for net, wanted in ((instantiate(cfg.model.generator), g_type), (instantiate(cfg.model.discriminator), d_type)):
        kinds = {type(m) for m in net.modules()}
        assert wanted in kinds, (model, option, net.__class__.__name__)
        others = {nn.ReLU, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.ELU} - {wanted}
        assert not kinds & others, (model, option, kinds & others)


@pytest.mark.parametrize("option, check", [
    ("batch", lambda m: isinstance(m, nn.BatchNorm2d)),
    ("layer", lambda m: isinstance(m, nn.GroupNorm) and m.num_groups == 1),
    ("instance", lambda m: isinstance(m, nn.GroupNorm) and m.num_groups == m.num_channels),
    ("group", lambda m: isinstance(m, nn.GroupNorm) and 1 < m.num_groups <= m.num_channels and m.num_groups <= 8),
])
def test_the_chosen_norm_is_in_both_dcgan_networks(make_cfg, option, check):
    cfg = make_cfg(f"norm={option}")
    for net in (instantiate(cfg.model.generator), instantiate(cfg.model.discriminator)):
        norms = [m for m in net.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
        assert norms and all(check(m) for m in norms), (option, net.__class__.__name__, norms)


def test_no_norm_and_spectral_norm_reach_the_networks(make_cfg):
    cfg = make_cfg("norm=none", "model.spectral_norm_d=true")
    generator, discriminator = instantiate(cfg.model.generator), instantiate(cfg.model.discriminator)
    assert not [m for net in (generator, discriminator) for m in net.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
    convs = [m for m in discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(nn.utils.parametrize.is_parametrized(m, "weight") for m in convs)


def test_a_penalty_on_a_batchnorm_critic_is_one_warning_before_training(make_cfg, caplog):
    """loss=wgan_gp on the default norm=batch trains (an ablation may want it) after one warning naming the
    penalty, the reason and the fix; the recipe (LayerNorm critic) and a BatchNorm critic without a penalty get none."""
    with caplog.at_level("WARNING", logger="dcgan_lab.pipeline"):
        result = train(make_cfg("loss=wgan_gp", "trainer.limit_train_batches=2"))
    assert result["g_steps"] == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name == "dcgan_lab.pipeline"]
    assert warnings == ["loss.gp_weight=10 with BatchNorm in D: the penalty is on each sample's gradient, but BatchNorm "
                        "makes each D output depend on the whole batch (Gulrajani et al. 2017, section 4, use no BatchNorm "
                        "in the critic); experiment=wgan_gp uses LayerNorm in D (norm.d._target_=dcgan_lab.nets.blocks.layer_norm)"]

    def caveats(*overrides):
        cfg = make_cfg(*TINY, *overrides)
        return instantiate(cfg.loss).caveats(instantiate(cfg.model.discriminator))

    assert caveats("experiment=wgan_gp") == []
    assert caveats("norm.d._target_=dcgan_lab.nets.blocks.layer_norm", "loss=wgan_gp") == []
    assert caveats() == []  # BatchNorm, no penalty
    assert caveats("loss.r1_weight=5")[0].startswith("loss.r1_weight=5 with BatchNorm in D")
    assert caveats("loss=wgan_gp", "loss.r1_weight=1")[0].startswith("loss.gp_weight=10 and loss.r1_weight=1 with")


# ---- every named variant changes the config -------------------------------------------------------
ABLATIONS = sorted(p.stem for p in (Path(CONF_DIR) / "ablation").glob("*.yaml"))


# Ablations written for a recipe (their file says so): checked on top of it. On the lab's defaults lr_2e-4 is a no-op.
ON_TOP_OF = {"lr_2e-4": ["experiment=reference_mnist"]}


@pytest.mark.parametrize("name", [a for a in ABLATIONS if a != "baseline"])
def test_every_ablation_changes_the_composed_config(make_cfg, tmp_path, name):
    from dcgan_lab.pipeline import resolved_run_config

    recipe = ON_TOP_OF.get(name, [])
    baseline = flatten(resolved_run_config(make_cfg(*recipe, "ablation=baseline", run_dir=tmp_path / "run")))
    variant = flatten(resolved_run_config(make_cfg(*recipe, f"ablation={name}", run_dir=tmp_path / "run")))
    changed = {k for k in baseline.keys() | variant.keys() if baseline.get(k) != variant.get(k)}
    assert changed, f"ablation={name} composes to the baseline's config"


def test_a_relativistic_g_loss_gets_d_of_the_real_batch_as_a_constant(parts):
    """loss=ragan's G loss names `real_logits`, so the objective gives it D(x) of the batch (called with the fake
    logits alone it was a TypeError), with feature matching too; G's loss reaches D's weights only through D(G(z))."""
    objective, D, real, fake = parts("loss=ragan")
    with torch.no_grad():
        expected = losses.ragan_g(D(fake), D(real))
        fm = losses.feature_matching(D(real, with_features=True)[1], D(fake, with_features=True)[1])
    assert_close(g_loss(objective, D, real, fake), expected)
    with_fm = parts("loss=ragan", "loss.feature_matching_weight=2")[0]
    assert_close(g_loss(with_fm, D, real, fake), expected + 2.0 * fm)

    weights = list(D.parameters())
    through_fakes_only = torch.autograd.grad(losses.ragan_g(D(fake), D(real).detach()), weights)
    through_both = torch.autograd.grad(losses.ragan_g(D(fake), D(real)), weights)
    for got, want, other in zip(torch.autograd.grad(g_loss(objective, D, real, fake), weights), through_fakes_only,
                                through_both):
        assert_close(got, want)
    assert any((a - b).abs().max() > 1e-6 for a, b in zip(through_fakes_only, through_both))  # the check can fail


def test_the_label_tricks_refusal_names_every_loss_option_with_targets(tmp_path, monkeypatch):
    """The loss options that take label targets are read from conf/loss/: a new one is named in the refusal line
    without a second list to keep up to date."""
    from dcgan_lab.errors import ConfigError
    from dcgan_lab.objective import GANObjective

    (tmp_path / "loss").mkdir()
    for path in (Path(CONF_DIR) / "loss").glob("*.yaml"):
        (tmp_path / "loss" / path.name).write_text(path.read_text())
    (tmp_path / "loss" / "smooth_bce.yaml").write_text(
        "d: {_target_: dcgan_lab.losses.bce_d, _partial_: true}\ng: {_target_: dcgan_lab.losses.bce_g, _partial_: true}\n")
    monkeypatch.setattr("dcgan_lab.config.CONF_DIR", tmp_path)
    with pytest.raises(ConfigError) as refused:
        GANObjective(d=losses.hinge_d, g=losses.hinge_g, flip_prob=0.1)
    assert "needs a loss with targets (loss=bce or loss=lsgan or loss=smooth_bce); the chosen loss's D loss, hinge_d, " \
           "has none." in str(refused.value)
