"""Every option of every config group composes and instantiates; bad values fail with one line."""
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dcgan_lab.config import validate
from dcgan_lab.errors import ConfigError
from dcgan_lab.pipeline import build_module
from tests.conftest import CONF_DIR, compose_config

# Groups whose options are built into objects here; hydra/ and sweep/ are exercised by the sweep tests.
SKIP_GROUPS = {"hydra", "sweep"}
# Groups outside config.yaml's defaults list, chosen with a leading '+': the rows of +sweep=seed_study.
APPENDED_GROUPS = {"seed_study"}


def options():
    for group in sorted(p for p in Path(CONF_DIR).iterdir() if p.is_dir() and p.name not in SKIP_GROUPS):
        for option in sorted(group.glob("*.yaml")):
            yield f"{'+' if group.name in APPENDED_GROUPS else ''}{group.name}={option.stem}"


def extra_overrides(option: str, tmp_path: Path) -> list[str]:
    """The values an option leaves required (`path: ???`: dataset=image_folder's folder), read from its YAML, so a
    new option with a required folder needs no case here."""
    group, name = option.lstrip("+").split("=")
    node = OmegaConf.load(Path(CONF_DIR) / group / f"{name}.yaml")
    return [f"{group}.{key}={tmp_path}" for key in node if OmegaConf.is_missing(node, key)]


def _interpolations(node, prefix=""):
    keys = node.keys() if OmegaConf.is_dict(node) else range(len(node))
    for key in keys:
        if OmegaConf.is_interpolation(node, key):
            yield f"{prefix}{key}"
        elif key != "hydra" and not OmegaConf.is_missing(node, key) and OmegaConf.is_config(node[key]):
            yield from _interpolations(node[key], f"{prefix}{key}.")


def test_the_run_takes_its_config_settled_values_that_interpolations_gave(tmp_path):
    """validate hands the pipeline the config with each interpolation read once: the values are those the
    interpolations give, a misspelt key still fails, and a required value left unset is still its one line."""
    cfg = compose_config(tmp_path / "run", ["model.attention=true", "dataset.image_size=64", "loss=hinge"])
    assert {"model.discriminator.attention", "model.num_classes", "loss.flip_prob"} <= set(_interpolations(cfg))
    run_cfg = validate(cfg)
    assert list(_interpolations(run_cfg)) == []
    resolved = OmegaConf.to_container(cfg, resolve=True)
    del resolved["hydra"]  # HydraConfig holds it; @hydra.main's config has none either
    assert OmegaConf.to_container(run_cfg) == resolved
    assert run_cfg.model.discriminator.attention is True and run_cfg.loss.real_label == 1.0
    with pytest.raises(Exception, match="model.atention"):
        run_cfg.model.atention

    with pytest.raises(ConfigError, match=r"dataset.path must be set"):
        validate(compose_config(tmp_path / "folder", ["dataset=image_folder"]))


@pytest.mark.parametrize("option", list(options()))
def test_every_option_instantiates(option, tmp_path):
    cfg = compose_config(tmp_path / "run", [option, *extra_overrides(option, tmp_path)])
    module = build_module(validate(cfg))
    assert module.generator is not None and module.discriminator is not None
    module.configure_optimizers  # noqa: B018 (optimizers need a Trainer; their partials must be callables)
    assert callable(module.optimizer_g) and callable(module.optimizer_d)
    datamodule = instantiate(cfg.dataset)
    assert datamodule.image_size == cfg.dataset.image_size
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    loggers = [instantiate(lg) for lg in cfg.logger.values() if lg is not None]
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        # GPU-only Trainer configs (ddp, multinode): the Trainer refuses to start without a GPU,
        # so build what it would be given.
        assert instantiate(cfg.trainer.strategy) is not None
        return
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    assert trainer is not None


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("dataset.image_size=48", "power of two"),
        ("dataset.batch_size=0", "dataset.batch_size=0"),
        ("optimizer.lr_d=-1", "optimizer.lr_d=-1"),
        ("optimizer.betas=[0.5,1.5]", "optimizer.betas"),
        ("training.n_critic=0", "training.n_critic=0"),
        ("training.real_label=1.5", "training.real_label"),
        ("training.flip_prob=0.7", "training.flip_prob"),
        ("model.attention=true model.attention_res=64", "model.attention_res=64"),
        ("model.g_stem=mlp", "model.g_stem"),
        ("dataset.channels=2", "dataset.channels=2"),
    ],
)
def test_bad_values_fail_with_one_line(override, fragment, tmp_path):
    cfg = compose_config(tmp_path / "run", override.split())
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    message = str(info.value)
    assert fragment in message and "\n" not in message


def test_unknown_key_and_option_fail_in_composition(tmp_path):
    with pytest.raises(ConfigCompositionException, match="atention"):
        compose_config(tmp_path / "run", ["model.atention=true"])
    with pytest.raises(ConfigCompositionException, match="wasserstein"):
        compose_config(tmp_path / "run", ["loss=wasserstein"])


def test_label_smoothing_needs_a_loss_with_targets(tmp_path):
    cfg = compose_config(tmp_path / "run", ["loss=hinge", "training.real_label=0.9"])
    with pytest.raises(ConfigError, match="loss=bce or loss=lsgan"):
        build_module(cfg)


def test_experiment_wgan_gp_sets_the_recipe(tmp_path):
    cfg = compose_config(tmp_path / "run", ["experiment=wgan_gp"])
    assert cfg.loss.gp_weight == 10.0 and cfg.training.n_critic == 5
    assert list(cfg.optimizer.betas) == [0.0, 0.9]
    assert cfg.norm.d._target_.endswith("layer_norm") and cfg.norm.g._target_.endswith("batch_norm")


def test_experiment_sndcgan_builds_the_spectral_norm_d_and_the_adam_it_needs(make_cfg):
    """experiment=sndcgan is the row of benchmarks/results/spectral_norm_d/ that caught up: every D layer spectrally
    normalised and none BatchNorm-ed, G unchanged, the hinge loss, and Adam's beta1 = 0 for both networks."""
    from torch.nn.utils import parametrize

    module = build_module(make_cfg("experiment=sndcgan"))
    d_layers = [m for m in module.discriminator.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert d_layers and all(parametrize.is_parametrized(m, "weight") for m in d_layers)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in module.discriminator.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in module.generator.modules())
    assert not any(parametrize.is_parametrized(m) for m in module.generator.modules())
    assert module.objective.loss_d.func.__name__ == "hinge_d" and module.objective.loss_g.func.__name__ == "hinge_g"
    for network, make_optimizer in module.optimizer_factories.items():
        optimizer = make_optimizer(getattr(module, network).parameters())
        assert optimizer.defaults["betas"] == (0.0, 0.9) and optimizer.defaults["lr"] == 2e-4


def test_an_override_whose_switch_is_off_is_one_warning_and_the_run_trains(make_cfg, caplog):
    """`model.attention_res=8` without `model.attention=true` (or an annealing span without instance noise) changed
    nothing, silently: a sweep over it trained one run again and again. Each such override is one warning line."""
    from dcgan_lab.config import inert_overrides
    from dcgan_lab.pipeline import train

    with caplog.at_level("WARNING", logger="dcgan_lab.pipeline"):
        result = train(make_cfg("model.attention_res=8", "training.instance_noise_anneal_steps=100",
                                "trainer.limit_train_batches=2"))
    assert result["g_steps"] == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name == "dcgan_lab.pipeline"]
    assert warnings == [
        "model.attention_res=8 changes nothing in this run: it acts only with model.attention=true.",
        "training.instance_noise_anneal_steps=100 changes nothing in this run: it acts only with training.instance_noise "
        "above 0 (e.g. 0.1).",
    ]

    def inert(*overrides):
        cfg = make_cfg(*overrides)
        return inert_overrides(cfg, list(cfg.hydra.overrides.task))

    # resnet's G takes labels through its norms (cbn): the label embedding's size is not used
    assert inert("model=resnet", "model.conditional=true", "model.embed_dim=64") == [
        "model.embed_dim=64 changes nothing in this run: it acts only with model.conditional=true and "
        "model.g_conditioning=concat."]
    assert inert("model.d_conditioning=projection")[0].startswith("model.d_conditioning=projection changes nothing")
    assert inert("loss.perceptual.network=resnet18")[0].endswith("it acts only with loss.perceptual_weight above 0.")
    assert inert("model.attention=true", "model.attention_res=8", "model.conditional=true", "model.embed_dim=64",
                 "model.ema_decay=0.9", "model.ema_warmup_steps=10", "training.instance_noise=0.1",
                 "training.instance_noise_anneal_steps=100") == []
