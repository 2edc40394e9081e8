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

# conf/dataset/image_folder.yaml: `class_names: ${folder_classes:${dataset.path},${dataset.labels}}` (its
# subfolders' names with labels=subfolders) and `num_classes: ${len:${dataset.class_names}}`.
if not OmegaConf.has_resolver("folder_classes"):
    def _folder_classes(path: str, labels: str) -> list[str]:
        from dcgan_lab.data.sources import folder_classes  # torch and PIL: only when a config asks

        return folder_classes(path, labels)

    OmegaConf.register_new_resolver("folder_classes", _folder_classes)
if not OmegaConf.has_resolver("len"):
    OmegaConf.register_new_resolver("len", len)
if not OmegaConf.has_resolver("max"):  # image_folder.yaml: `${max:2,...}`, KMeans' least k
    OmegaConf.register_new_resolver("max", max)

if not OmegaConf.has_resolver("unique_dir"):
    from dcgan_lab.run_folder import unique_dir

    OmegaConf.register_new_resolver("unique_dir", unique_dir)


def _on_gpu(accelerator: str) -> bool:
    import torch

    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def cpu_has_bf16_kernels() -> bool:
    """Whether oneDNN has native bf16 kernels on this CPU (AVX-512 or AMX on x86, bf16 on ARM). Without them,
    bf16 autocast falls back to slow paths: on an AVX2-only AMD EPYC a DCGAN D step ran 18x slower than fp32."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return False


def fastest_precision(accelerator: str) -> str:
    """The Trainer precision `make bench` measured fastest for a DCGAN on this accelerator.

    CPU with bf16 kernels: bf16 autocast (with channels_last) is ~1.5-2x fp32; without them, fp32. GPU: a 32x32
    DCGAN step is launch-bound and bf16 gains nothing (H200: plain loop fp32 7.9k img/s, bf16 6.8k), so fp32
    keeps exact numerics.
    """
    if _on_gpu(accelerator):
        return "32-true"
    return "bf16-mixed" if cpu_has_bf16_kernels() else "32-true"


def fastest_channels_last(accelerator: str) -> bool:
    """Whether channels_last G and D are the faster memory format on this accelerator (`make bench`).

    CPU: yes, oneDNN's NHWC kernels (~1.1x alone, ~2x with bf16). GPU in fp32: not so far; on an H200 the plain
    loop in bf16 + channels_last ran at 0.83x its fp32 NCHW speed, and the lab default gained 1.40x with every
    callback and channels_last off, at most 1.17x with any one callback off (benchmarks/results/cuda.md). The
    bench's CUDA row `lab_default_channels_last` times the lab default with channels_last on.
    """
    return not _on_gpu(accelerator)


# `precision: ${fastest_precision:${trainer.accelerator}}` in conf/trainer/default.yaml, and
# `enabled: ${fastest_channels_last:${trainer.accelerator}}` in conf/callbacks/default.yaml.
for _name, _resolver in (("fastest_precision", fastest_precision), ("fastest_channels_last", fastest_channels_last)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _resolver)
