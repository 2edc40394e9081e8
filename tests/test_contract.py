"""The network contract (dcgan_lab/nets/contract.py): what every G and D provides, written once.

A family builds only its trunk; the latent, the label input, conditional norms, D's head + projection and
`with_features` come from the bases, and a new family is one network file plus one conf/model YAML.
"""

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from dcgan_lab.nets import blocks
from dcgan_lab.nets.conditioning import ConditionalNorm, LabelledSequential
from dcgan_lab.nets.contract import DiscriminatorBase, GeneratorBase
from dcgan_lab.pipeline import train
from tests.conftest import FAST, ROOT, compose_config

FAMILIES = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))


class TinyGenerator(GeneratorBase):
    """A whole family's G, trunk only: linear -> 4x4 -> norm -> act -> upsample -> conv -> tanh."""

    def __init__(self, *, width, norm, activation, spectral_norm=False, **contract):
        super().__init__(**contract)
        norm = self.label_norm(norm)
        self.body = LabelledSequential(
            nn.Linear(self.trunk_input_dim, width * 16), nn.Unflatten(1, (width, 4, 4)), norm(width), activation(),
            nn.Upsample(size=self.image_size), nn.Conv2d(width, self.channels, 3, padding=1), nn.Tanh(),
        )

    def trunk(self, h, labels):
        return self.body(h, labels)


class TinyDiscriminator(DiscriminatorBase):
    """A whole family's D, trunk only: one strided conv to a 2x2 map; the head reads the map."""

    def __init__(self, *, width, norm, activation, spectral_norm=False, dropout=0.0, **contract):
        super().__init__(**contract)
        self.features = nn.Sequential(nn.Conv2d(self.in_channels, width, 4, 4), activation(), nn.AdaptiveAvgPool2d(2))
        self.end_with_head(width, spectral_norm, head=nn.Conv2d(width, 1, 2))

    def trunk(self, x):
        return self.features(x)  # (B, width, 2, 2)


def tiny(num_classes=3, g_mode="concat", d_mode="projection"):
    common = dict(image_size=16, channels=1, num_classes=num_classes)
    g = TinyGenerator(width=4, norm=blocks.batch_norm, activation=nn.ReLU, latent_dim=6, conditioning=g_mode, embed_dim=5, **common)
    d = TinyDiscriminator(width=4, norm=blocks.batch_norm, activation=nn.LeakyReLU, conditioning=d_mode, **common)
    return g.eval(), d.eval()


def test_a_family_that_builds_only_its_trunk_gets_latent_labels_and_conditional_norms():
    torch.manual_seed(0)
    g, _ = tiny(g_mode="concat")
    z = g.sample_latent(4, generator=torch.Generator().manual_seed(1))
    assert z.shape == (4, 6) and torch.equal(z, torch.randn(4, 6, generator=torch.Generator().manual_seed(1)))
    assert g.trunk_input_dim == 6 + 5  # z joined with a 5-dim label embedding
    images = g(z[:1].repeat(2, 1), torch.tensor([0, 2]))
    assert images.shape == (2, 1, 16, 16) and images.abs().max() <= 1
    assert (images[0] - images[1]).abs().max() > 1e-4  # the label reaches the image

    g, _ = tiny(g_mode="cbn")
    assert g.trunk_input_dim == 6 and sum(isinstance(m, ConditionalNorm) for m in g.modules()) == 1
    z = g.sample_latent(1).repeat(3, 1)
    before = g(z, torch.tensor([0, 1, 2]))
    torch.testing.assert_close(before[0], before[1])  # conditional norms start neutral
    with torch.no_grad():
        next(m for m in g.modules() if isinstance(m, ConditionalNorm)).gain.weight[1] = 1.0
    after = g(z, torch.tensor([0, 1, 2]))
    torch.testing.assert_close(after[[0, 2]], before[[0, 2]])
    assert (after[1] - before[1]).abs().max() > 1e-4  # only class 1's gain changed


def test_the_discriminator_ending_is_head_plus_projection_on_pooled_features():
    torch.manual_seed(0)
    _, d = tiny(d_mode="projection")
    x, labels = torch.rand(3, 1, 16, 16) * 2 - 1, torch.tensor([2, 0, 1])
    logits, features = d(x, labels, with_features=True)
    h = d.features(x)  # (3, 4, 2, 2)
    # Miyato & Koyama 2018: logit = head(h) + <embed(y), sum over positions of h>
    expected = d.head(h).flatten() + (d.projection.embedding(labels) * h.sum(dim=(2, 3))).sum(dim=1)
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(features, h.flatten(1))  # flat (B, F) features
    torch.testing.assert_close(d(x, labels), logits)

    _, d = tiny(d_mode="concat")
    assert d.in_channels == 1 + 3 and d.features[0].in_channels == 4  # one-hot label maps joined to the image
    same = x[:1].repeat(2, 1, 1, 1)
    assert (d(same, torch.tensor([0, 1]))[0] - d(same, torch.tensor([0, 1]))[1]).abs() > 1e-6


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_follows_the_contract(family, tmp_path):
    cfg = compose_config(tmp_path / "run", [f"model={family}", "model.conditional=true", "model.ngf=8", "model.ndf=8"])
    torch.manual_seed(0)
    g, d = instantiate(cfg.model.generator), instantiate(cfg.model.discriminator)
    assert isinstance(g, GeneratorBase) and isinstance(d, DiscriminatorBase)
    assert (g.latent_dim, g.num_classes, d.num_classes) == (cfg.model.latent_dim, 10, 10)
    size, channels = cfg.dataset.image_size, cfg.dataset.channels
    labels = torch.arange(5)
    feature_sizes = set()
    for resolution in blocks.resolutions(size) if hasattr(g, "grow") else [size]:
        if hasattr(g, "grow"):
            g.grow(resolution, 1.0), d.grow(resolution, 1.0)
        images = g(g.sample_latent(5), labels)
        assert images.shape == (5, channels, resolution, resolution) and images.abs().max() <= 1
        logits, features = d(images, labels, with_features=True)
        assert logits.shape == (5,) and features.dim() == 2 and features.shape[0] == 5
        feature_sizes.add(features.shape[1])
    assert len(feature_sizes) == 1  # one feature size F whatever the resolution (metrics compare them)
    with pytest.raises(ValueError, match=r"class-conditional \(num_classes=10\): pass labels"):
        g(g.sample_latent(2))
    with pytest.raises(ValueError, match=r"class-conditional \(num_classes=10\): pass labels"):
        d(images)


def test_unconditional_nets_ignore_labels(tmp_path):
    cfg = compose_config(tmp_path / "run", ["model.ngf=8", "model.ndf=8"])
    g, d = instantiate(cfg.model.generator).eval(), instantiate(cfg.model.discriminator).eval()
    z = g.sample_latent(3)
    torch.testing.assert_close(g(z, torch.tensor([1, 2, 3])), g(z))
    torch.testing.assert_close(d(g(z), torch.tensor([1, 2, 3])), d(g(z)))


def test_a_new_family_is_one_network_file_and_one_yaml(tmp_path):
    """The Tiny family above plus this YAML (the shared contract file supplies every argument) trains
    class-conditionally: label embedding in G, projection in D, from the contract alone. (The option's name is one
    no real conf/model option has: a real one would shadow the test's.)"""
    (tmp_path / "extra" / "model").mkdir(parents=True)
    (tmp_path / "extra" / "model" / "contract_test_family.yaml").write_text(
        "defaults:\n  - shared/contract@_here_\n  - _self_\n"
        "latent_dim: 16\n"
        "generator:\n  _target_: tests.test_contract.TinyGenerator\n"
        "discriminator:\n  _target_: tests.test_contract.TinyDiscriminator\n"
    )
    run = tmp_path / "run"
    cfg = compose_config(run, [*FAST, f"hydra.searchpath=[file://{tmp_path / 'extra'}]", "model=contract_test_family",
                               "model.conditional=true"])
    result = train(cfg)
    assert result["g_steps"] == 4
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert state["generator.label_input.embedding.weight"].shape == (10, cfg.model.embed_dim)
    assert state["discriminator.projection.embedding.weight"].shape == (10, cfg.model.ndf)
    assert state["generator.body.0.weight"].shape == (8 * 16, 16 + cfg.model.embed_dim)  # ngf=8 in FAST


def summary_cells(pl_module) -> dict[str, list[str]]:
    """NetworkSummary's table as a user reads it: row name -> its cells."""
    from dcgan_lab.callbacks.summary import measure, table

    return {cells[0]: cells[1:] for cells in (row.split() for row in table(measure(pl_module))[1:])}


def test_network_summary_counts_each_forward_and_moves_nothing(tmp_path):
    from dcgan_lab.callbacks.summary import forward_flops
    from dcgan_lab.pipeline import build_module

    module = build_module(compose_config(tmp_path / "run", []))  # the default DCGAN, 32x32x1
    g = module.generator
    # torch counts a multiply-add as 2 FLOPs. A transposed conv's MACs: in x out x k^2 x input positions.
    # G: z (100) -> 256@4x4 -> 128@8x8 -> 64@16x16 -> 1@32x32, 4x4 kernels.
    g_macs = 100 * 256 * 16 + 256 * 128 * 16 * 4**2 + 128 * 64 * 16 * 8**2 + 64 * 1 * 16 * 16**2
    # D: 1@32x32 -> 64@16x16 -> 128@8x8 -> 256@4x4, each a 4x4 conv; then a 4x4 conv to 1 logit.
    d_macs = 1 * 64 * 16 * 16**2 + 64 * 128 * 16 * 8**2 + 128 * 256 * 16 * 4**2 + 256 * 16
    z = torch.zeros(3, 100)
    assert forward_flops(g, z)[0] == 3 * 2 * g_macs
    assert forward_flops(module.discriminator, torch.zeros(3, 1, 32, 32))[0] == 3 * 2 * d_macs

    weights_and_statistics = {k: v.clone() for k, v in module.state_dict().items()}
    rng = torch.random.get_rng_state()
    cells = summary_cells(module)
    assert cells["generator"] == ["Generator", "1.1", "M", "1.1", "M", "34.9", "M", "1x32x32"]
    assert cells["discriminator"] == ["Discriminator", "661", "K", "661", "K", "34.1", "M", "1"]
    assert 2 * g_macs == 34_897_920 and 2 * d_macs == 34_086_912  # the 34.9 M and 34.1 M above
    # Counting moved no BatchNorm statistic or weight, drew no random number, and left the networks training.
    for name, value in module.state_dict().items():
        torch.testing.assert_close(value, weights_and_statistics[name], rtol=0, atol=0, msg=name)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert g.training and module.discriminator.training


def test_network_summary_shows_what_an_ablation_costs(tmp_path):
    from dcgan_lab.pipeline import build_module

    def summary(*overrides):
        return summary_cells(build_module(compose_config(tmp_path / "_".join(overrides or ["base"]), list(overrides))))

    def flops(cells):  # ["Generator", "1.1", "M", "1.1", "M", "34.9", "M", "1x32x32"] -> 34.9e6
        return float(cells[5]) * {"K": 1e3, "M": 1e6, "G": 1e9}[cells[6]]

    base = summary()
    attention = summary("model.attention=true")  # a self-attention block in G and in D
    assert flops(attention["generator"]) > flops(base["generator"])
    assert flops(attention["discriminator"]) > flops(base["discriminator"])
    conditional = summary("model.conditional=true")  # 10 one-hot label maps joined to D's input
    assert flops(conditional["discriminator"]) > flops(base["discriminator"])
    progressive = build_module(compose_config(tmp_path / "progressive", ["model=progressive"]))
    assert progressive.generator.resolution == 4  # it starts small, and is counted as it ends: grown to 32x32
    assert summary_cells(progressive)["generator"][-1] == "1x32x32" and progressive.generator.resolution == 4
    ema = summary("model.ema_decay=0.999")  # the EMA copy of G: G's parameters, none trained, no forward counted
    assert ema["generator_ema"] == ["Generator", "1.1", "M", "0", "-", "-"]
    assert set(base) == {"generator", "discriminator"}
