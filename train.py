"""Train one GAN (or a sweep with -m) from the Hydra config in conf/."""
import hydra

import dcgan_lab  # noqa: F401  (registers config resolvers)
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    from dcgan_lab.command_line import exit_on_bad_values

    exit_on_bad_values(cfg)  # a bad value: one line before the training stack loads
    from dcgan_lab.pipeline import main as run  # imported here so --help and config errors are fast

    return run(cfg)


if __name__ == "__main__":
    from dcgan_lab.command_line import exit_on_bad_command_line

    exit_on_bad_command_line("config")  # a misspelt option or key: one line, exit 2, before Hydra runs
    main()
