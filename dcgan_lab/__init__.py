"""dcgan_lab: GAN ablations as Hydra overrides, trained with Lightning, measured with the field's metrics."""
from omegaconf import OmegaConf

# `${and:${model.attention},${model.attention_d}}` in configs; registered once per process.
if not OmegaConf.has_resolver("and"):
    OmegaConf.register_new_resolver("and", lambda *values: all(values))
# `${if:${model.conditional},${dataset.num_classes},0}`: a value chosen by a boolean.
if not OmegaConf.has_resolver("if"):
    OmegaConf.register_new_resolver("if", lambda condition, then, otherwise: then if condition else otherwise)

if not OmegaConf.has_resolver("unique_dir"):
    from dcgan_lab.run_folder import unique_dir

    OmegaConf.register_new_resolver("unique_dir", unique_dir)
