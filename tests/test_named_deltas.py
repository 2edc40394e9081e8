"""conf/experiment (recipes) and conf/ablation (one-change variants): each recipe is written once, and the two compose."""
from omegaconf import OmegaConf

from tests.conftest import compose_config


def without_hydra(cfg) -> dict:
    return {k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k != "hydra"}


def test_an_ablation_that_is_a_whole_recipe_is_the_experiment(tmp_path):
    assert without_hydra(compose_config(tmp_path, ["ablation=wgan_gp"])) == without_hydra(compose_config(tmp_path, ["experiment=wgan_gp"]))


def test_an_ablation_applies_on_top_of_an_experiment(tmp_path):
    cfg = compose_config(tmp_path, ["+sweep=arch_ablation", "experiment=wgan_gp", "ablation=self_attention"])
    assert cfg.model.attention is True  # the one change
    assert (cfg.training.n_critic, cfg.loss.gp_weight, list(cfg.optimizer.betas)) == (5, 10.0, [0.0, 0.9])  # the recipe
    assert cfg.norm.d._target_ == "dcgan_lab.nets.blocks.layer_norm"
