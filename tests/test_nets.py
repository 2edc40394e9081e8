"""G and D shapes for every image size x attention x norm, and DCGAN's structural conventions."""
import pytest
import torch
from functools import partial
from torch import nn

from dcgan_lab.nets import blocks
from dcgan_lab.nets.discriminator import Discriminator
from dcgan_lab.nets.generator import Generator

NORMS = [blocks.batch_norm, blocks.layer_norm, blocks.instance_norm, blocks.group_norm, blocks.no_norm]
SIZES = [16, 32, 64, 128, 256]


def nets(size, norm, attention, channels=3, width=8, **kw):
    g = Generator(latent_dim=16, image_size=size, channels=channels, width=width, norm=norm, activation=nn.ReLU,
                  attention=attention, attention_res=8, **kw)
    d = Discriminator(image_size=size, channels=channels, width=width, norm=norm,
                      activation=partial(nn.LeakyReLU, 0.2), attention=attention, attention_res=8)
    return g, d


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize("norm", NORMS, ids=lambda f: f.__name__)
def test_shapes(size, attention, norm):
    g, d = nets(size, norm, attention)
    z = g.sample_latent(2)
    images = g(z)
    assert images.shape == (2, 3, size, size)
    assert images.min() >= -1 and images.max() <= 1  # tanh output
    assert d(images).shape == (2,)
    assert any(isinstance(m, blocks.SelfAttention) for m in g.modules()) == attention
    assert any(isinstance(m, blocks.SelfAttention) for m in d.modules()) == attention


@pytest.mark.parametrize("stem", ["convtranspose", "linear"])
def test_generator_stems_and_spectral_norm(stem):
    g = Generator(latent_dim=16, image_size=32, channels=1, width=8, norm=blocks.batch_norm, activation=nn.ReLU,
                  stem=stem, spectral_norm=True)
    assert g(torch.randn(3, 16)).shape == (3, 1, 32, 32)
    assert any(hasattr(m, "parametrizations") for m in g.modules())


def largest_singular_values(net: nn.Module) -> dict[str, float]:
    """The largest singular value of each spectrally normalised weight as the layer uses it (the weight reshaped to
    a matrix as torch's spectral_norm does: output channels first; a transposed conv's are its dim 1)."""
    found = {}
    for name, m in net.named_modules():
        if hasattr(m, "parametrizations"):
            weight = m.weight.detach()
            matrix = (weight.transpose(0, 1) if isinstance(m, nn.ConvTranspose2d) else weight).flatten(1)
            found[name] = torch.linalg.matrix_norm(matrix, ord=2).item()
    return found


def test_spectral_norm_holds_the_dcgan_init_weights_to_one():
    """DCGAN re-initialises its weights after spectral norm wrapped them; the power-iteration vectors must follow,
    or the stored ones (what eval mode, i.e. grids and metrics, reads) belong to the discarded weights: each layer's
    largest singular value was 8 to 68 in D and up to 317 in G before the first training step (1.3 after it)."""
    torch.manual_seed(0)
    g = Generator(latent_dim=16, image_size=32, channels=1, width=8, norm=blocks.batch_norm, activation=nn.ReLU,
                  attention=True, attention_res=8, spectral_norm=True).eval()
    d = Discriminator(image_size=32, channels=1, width=8, norm=blocks.batch_norm, activation=partial(nn.LeakyReLU, 0.2),
                      attention=True, attention_res=8, spectral_norm=True, num_classes=10).eval()
    for net in (g, d):
        sigmas = largest_singular_values(net)
        assert len(sigmas) >= 5 and all(0.99 < s < 1.05 for s in sigmas.values()), sigmas


def test_depth_follows_image_size():
    # One stride-2 block per doubling from 4x4: log2(S) - 2 strided convs in D before the 4x4 head.
    for size in SIZES:
        _, d = nets(size, blocks.batch_norm, False)
        strided = [m for m in d.features if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
        assert len(strided) == size.bit_length() - 1 - 2


def test_discriminator_first_layer_has_no_norm():
    _, d = nets(32, blocks.batch_norm, False)
    assert isinstance(d.features[0], nn.Conv2d) and not isinstance(d.features[1], nn.BatchNorm2d)


def test_dcgan_init_statistics():
    # Radford et al.: conv weights ~ N(0, 0.02); BatchNorm scales ~ N(1, 0.02) (not PyTorch's constant 1), biases 0.
    g, d = nets(64, blocks.batch_norm, False, width=64)
    for net in (g, d):
        convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        weights = torch.cat([m.weight.flatten() for m in convs])
        assert weights.mean().item() == pytest.approx(0.0, abs=0.001)
        assert weights.std().item() == pytest.approx(0.02, rel=0.05)
        bn = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        scales = torch.cat([m.weight.detach() for m in bn])
        assert scales.mean().item() == pytest.approx(1.0, abs=0.005)
        assert scales.std().item() == pytest.approx(0.02, rel=0.15)
        assert all(m.bias.abs().max() == 0 for m in bn)


def test_self_attention_starts_as_identity():
    attn = blocks.SelfAttention(16)
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(attn(x), x)  # gamma = 0 at init (SAGAN)
