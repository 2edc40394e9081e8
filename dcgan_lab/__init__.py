"""dcgan_lab: GAN ablations as Hydra overrides, trained with Lightning, measured with the field's metrics."""
from pathlib import Path

from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # the config folder: the lab's registry of options

# `${and:${model.attention},${model.attention_d}}` in configs; registered once per process.
if not OmegaConf.has_resolver("and"):
    OmegaConf.register_new_resolver("and", lambda *values: all(values))
# `${if:${model.conditional},${dataset.num_classes},0}`: a value chosen by a boolean.
if not OmegaConf.has_resolver("if"):
    OmegaConf.register_new_resolver("if", lambda condition, then, otherwise: then if condition else otherwise)

if not OmegaConf.has_resolver("unique_dir"):
    from dcgan_lab.run_folder import unique_dir

    OmegaConf.register_new_resolver("unique_dir", unique_dir)


def fastest_precision(accelerator: str) -> str:
    """The Trainer precision `make bench` measured fastest for a DCGAN on this accelerator.

    CPU: bf16 autocast (with channels_last) is ~2x fp32. GPU: a 32x32 DCGAN step is launch-bound and
    bf16 gains nothing (H200: plain loop fp32 7.9k img/s, bf16 6.8k), so fp32 keeps exact numerics.
    """
    import torch

    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return "32-true" if on_gpu else "bf16-mixed"


# `precision: ${fastest_precision:${trainer.accelerator}}` in conf/trainer/default.yaml.
if not OmegaConf.has_resolver("fastest_precision"):
    OmegaConf.register_new_resolver("fastest_precision", fastest_precision)
