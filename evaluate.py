"""Metrics for saved generators: python evaluate.py ckpt=<checkpoint, run folder or glob> metrics.n_samples=10000"""
import hydra
from omegaconf import DictConfig

import dcgan_lab  # noqa: F401  (registers config resolvers)


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig):
    from dcgan_lab.metrics.checkpoints import main as run  # imported here so --help and config errors are fast

    return run(cfg)


if __name__ == "__main__":
    from dcgan_lab.command_line import exit_on_bad_command_line

    exit_on_bad_command_line("evaluate")  # a misspelt option or key: one line, exit 2, before Hydra runs
    main()
