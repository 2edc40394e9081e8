"""Model families (mlp, resnet, progressive) and class conditioning, at the level of the networks."""
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn

from dcgan_lab.errors import ConfigError
from dcgan_lab.nets import blocks
from dcgan_lab.nets.conditioning import ConditionalNorm
from dcgan_lab.nets.discriminator import Discriminator
from dcgan_lab.nets.generator import Generator
from dcgan_lab.nets.mlp import MLPDiscriminator, MLPGenerator
from dcgan_lab.nets.progressive import GrowthSchedule, ProgressiveDiscriminator, ProgressiveGenerator
from dcgan_lab.nets.resnet import ResNetDiscriminator, ResNetGenerator

LEAKY = partial(nn.LeakyReLU, 0.2)
FAMILIES = {
    "dcgan": (Generator, Discriminator),
    "mlp": (MLPGenerator, MLPDiscriminator),
    "resnet": (ResNetGenerator, ResNetDiscriminator),
    "progressive": (ProgressiveGenerator, ProgressiveDiscriminator),
}


def build(family, size=16, channels=1, width=4, num_classes=0, g_mode="concat", d_mode="projection", **kw):
    g_cls, d_cls = FAMILIES[family]
    g = g_cls(latent_dim=8, image_size=size, channels=channels, width=width, norm=blocks.batch_norm,
              activation=nn.ReLU, num_classes=num_classes, conditioning=g_mode, **kw)
    d = d_cls(image_size=size, channels=channels, width=width, norm=blocks.batch_norm, activation=LEAKY,
              num_classes=num_classes, conditioning=d_mode)
    for net in (g, d):
        if hasattr(net, "grow"):
            net.grow(size, 1.0)
    return g, d


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("g_mode,d_mode", [("concat", "projection"), ("cbn", "concat")])
@pytest.mark.parametrize("num_classes", [0, 10])
def test_shapes_and_feature_outputs(family, g_mode, d_mode, num_classes):
    g, d = build(family, size=16, channels=3, num_classes=num_classes, g_mode=g_mode, d_mode=d_mode)
    labels = torch.tensor([0, 3, 9]) if num_classes else None
    images = g(g.sample_latent(3), labels)
    assert images.shape == (3, 3, 16, 16)
    assert images.abs().max() <= 1
    logits, features = d(images, labels, with_features=True)
    assert logits.shape == (3,) and features.shape[0] == 3 and features.dim() == 2
    d.eval()  # (spectral norm's power iteration moves in train mode)
    torch.testing.assert_close(d(images, labels), d(images, labels, with_features=True)[0])
    assert any(isinstance(m, ConditionalNorm) for m in g.modules()) == (num_classes > 0 and g_mode == "cbn")


@pytest.mark.parametrize("size", [16, 32, 64])
def test_resnet_any_power_of_two_with_attention(size):
    g, d = build("resnet", size=size, attention=True, attention_res=8)
    d_att = ResNetDiscriminator(image_size=size, channels=1, width=4, norm=blocks.no_norm, activation=LEAKY,
                                attention=True, attention_res=8)
    assert g(g.sample_latent(2)).shape == (2, 1, size, size)
    assert d_att(torch.zeros(2, 1, size, size)).shape == (2,)
    assert sum(isinstance(m, blocks.SelfAttention) for m in g.modules()) == 1
    assert sum(isinstance(m, blocks.SelfAttention) for m in d_att.modules()) == 1
    # SNGAN: spectral norm on every conv/linear of D by default; up/down blocks one per doubling from 4x4
    assert all(hasattr(m, "parametrizations") for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert len(d.features) - 1 == size.bit_length() - 3


def test_mlp_is_the_fully_connected_gan():
    g, d = build("mlp", size=32, width=64)
    assert [m.out_features for m in g.modules() if isinstance(m, nn.Linear)] == [256, 512, 1024, 32 * 32]
    assert [m.out_features for m in d.modules() if isinstance(m, nn.Linear)] == [1024, 512, 256, 1]
    assert not any(isinstance(m, nn.Conv2d) for m in list(g.modules()) + list(d.modules()))


@pytest.mark.parametrize("width", [1, 2, 3])
@pytest.mark.parametrize("norm", ["batch_norm", "layer_norm", "no_norm", "group_norm", "instance_norm"])
def test_mlp_builds_only_with_norms_that_keep_samples_apart(norm, width):
    """On the MLP's 1x1 maps instance norm (and group norm with one channel per group: GroupNorm(gcd(8, F), F) for
    F = 4w or 8w <= 8) outputs a constant, so every sample would be the same: G and D refuse it; the norms the
    refusal names (batch, layer, none; group from width 3) build networks whose samples and logits differ."""
    refused = norm == "instance_norm" or (norm == "group_norm" and width < 3)
    factory = getattr(blocks, norm)
    for cls, key in ((MLPGenerator, "norm.g"), (MLPDiscriminator, "norm.d")):
        args = dict(latent_dim=8) if cls is MLPGenerator else {}
        make = partial(cls, image_size=16, channels=1, width=width, norm=factory, activation=nn.ReLU, **args)
        if refused:
            with pytest.raises(ConfigError, match=f"^model=mlp cannot use {key}={norm}: "):
                make()
            continue
        torch.manual_seed(0)
        net = make()
        out = net(torch.randn(4, 8)) if cls is MLPGenerator else net(torch.rand(4, 1, 16, 16) * 2 - 1)
        apart = (out[1:] - out[0]).abs().max()  # the refused norms leave ~1e-6: every sample (logit) the same
        assert apart > 1e-3, (cls.__name__, norm, width, apart)


@pytest.mark.parametrize("family", FAMILIES)
def test_labels_change_the_output(family):
    """Concatenation in G and projection or concatenation in D make outputs depend on the label."""
    torch.manual_seed(0)
    for g_mode, d_mode in [("concat", "projection"), ("concat", "concat")]:
        g, d = build(family, num_classes=10, g_mode=g_mode, d_mode=d_mode)
        g.eval(), d.eval()
        z = g.sample_latent(1).repeat(2, 1)
        two = torch.tensor([1, 7])
        images = g(z, two)
        assert (images[0] - images[1]).abs().max() > 1e-4
        same = images[:1].repeat(2, 1, 1, 1)
        assert (d(same, two)[0] - d(same, two)[1]).abs() > 1e-6


def test_conditional_norm_starts_neutral_and_learns_per_class():
    norm = ConditionalNorm(nn.BatchNorm2d(4, affine=False), 4, num_classes=3).eval()
    x = torch.randn(2, 4, 5, 5)
    labels = torch.tensor([0, 2])
    torch.testing.assert_close(norm(x, labels), norm.norm(x))
    with torch.no_grad():
        norm.gain.weight[2] = 1.0   # class 2: gain x2
        norm.bias.weight[2] = 0.5
    out = norm(x, labels)
    torch.testing.assert_close(out[0], norm.norm(x)[0])
    torch.testing.assert_close(out[1], 2 * norm.norm(x)[1] + 0.5)


def test_unconditional_dcgan_keeps_its_parameter_names():
    g, d = build("dcgan", size=16)
    assert not any("label" in k or "projection" in k for k in list(g.state_dict()) + list(d.state_dict()))
    assert "body.0.weight" in g.state_dict()  # the body keeps nn.Sequential's numbering


def test_growth_schedule_phases_and_alpha():
    schedule = GrowthSchedule(final_resolution=32, fade_images=100, stable_images=50)
    # 4x4 for 50 images; then per phase: fade 100, stable 50
    expected = {0: (4, 1.0), 49: (4, 1.0), 50: (8, 0.0), 75: (8, 0.25), 150: (8, 1.0), 199: (8, 1.0),
                200: (16, 0.0), 300: (16, 1.0), 350: (32, 0.0), 400: (32, 0.5), 450: (32, 1.0), 10_000: (32, 1.0)}
    for seen, (resolution, alpha) in expected.items():
        assert schedule(seen) == (resolution, pytest.approx(alpha)), seen


def test_progressive_fade_in_starts_from_the_previous_resolution():
    """At alpha=0 a new resolution changes nothing: G's output is the previous one upsampled, and D scores
    an image as the previous D scores its downsampled version."""
    torch.manual_seed(0)
    g, d = build("progressive", size=32)
    g.eval(), d.eval()
    z = g.sample_latent(2)
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    for resolution in (8, 16):
        g.grow(resolution // 2, 1.0), d.grow(resolution // 2, 1.0)
        before, d_before = g(z), d(F.avg_pool2d(x, 16 // (resolution // 2)))
        g.grow(resolution, 0.0), d.grow(resolution, 0.0)
        after, d_after = g(z), d(F.avg_pool2d(x, 16 // resolution) if resolution < 16 else x)
        assert after.shape[-1] == resolution
        torch.testing.assert_close(after, F.interpolate(before, scale_factor=2, mode="nearest"))
        torch.testing.assert_close(d_after, d_before)
    g.grow(16, 0.5)
    assert g(z).shape == (2, 1, 16, 16)
    assert d(torch.zeros(2, 1, 32, 32)).shape == (2,)  # larger inputs are pooled to the current resolution


def test_progressive_state_travels_in_the_state_dict():
    g, _ = build("progressive", size=32)
    g.grow(16, 0.25)
    fresh, _ = build("progressive", size=32)
    fresh.grow(4, 1.0)
    fresh.load_state_dict(g.state_dict())
    assert (fresh.resolution, fresh(fresh.sample_latent(1)).shape[-1]) == (16, 16)
    assert fresh.alpha.item() == pytest.approx(0.25)



def test_progressive_d_gradient_penalty_is_finite_under_bf16(tmp_path):
    # bf16 makes some features identical across the batch; the minibatch stddev's gradient must stay finite
    # there, through the gradient penalty's double backward (this was NaN at the first step of
    # `model=progressive loss=wgan_gp` with the default widths).
    from hydra.utils import instantiate

    from dcgan_lab.config import compose_run_config
    from dcgan_lab.data.datamodule import to_float
    from dcgan_lab.losses import gradient_penalty

    cfg = compose_run_config(tmp_path, ["model=progressive", "loss=wgan_gp"])
    torch.manual_seed(42)
    g, d = instantiate(cfg.model.generator), instantiate(cfg.model.discriminator)
    resolution, alpha = instantiate(cfg.model.growth)(0)
    g.grow(resolution, alpha)
    d.grow(resolution, alpha)
    images = instantiate(cfg.dataset).split("train").images[:64]
    real = F.adaptive_avg_pool2d(to_float(images), resolution)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fake = g(torch.randn(64, g.latent_dim)).detach()
        penalty = gradient_penalty(d, real, fake)
    penalty.backward()
    assert torch.isfinite(penalty)
    assert all(torch.isfinite(p.grad).all() for p in d.parameters() if p.grad is not None)


@pytest.mark.parametrize("family", FAMILIES)
def test_minibatch_std_lets_d_see_a_batch_without_variety(make_cfg, family):
    """`model.minibatch_std=true` (progressive: its default) makes D's logit for an image depend on how varied its
    batch is: in eval mode, where BatchNorm uses its running statistics and nothing else mixes the batch, the same
    image scores differently among varied images and among copies of itself (a collapsed G's batch). Off, it does not."""
    torch.manual_seed(0)
    varied = torch.rand(4, 1, 32, 32) * 2 - 1
    copies = varied[:1].expand(4, -1, -1, -1)
    for minibatch_std in (False, True):
        cfg = make_cfg(f"model={family}", "model.ndf=8", f"model.minibatch_std={minibatch_std}")
        d = instantiate(cfg.model.discriminator).eval()
        if hasattr(d, "grow"):
            d.grow(32, 1.0)
        with torch.no_grad():
            for weight in d.parameters():  # a freshly initialised D hardly reads its input: make it read
                weight.mul_(4)
            change = (d(varied)[0] - d(copies)[0]).abs()
        assert any(isinstance(m, blocks.MinibatchStddev) for m in d.modules()) == minibatch_std
        assert change > 1e-3 if minibatch_std else change < 1e-5, (family, minibatch_std, float(change))
    assert make_cfg(f"model={family}").model.minibatch_std == (family == "progressive")
