from dcgan_lab.callbacks.samples import SampleGrid

__all__ = ["SampleGrid"]
