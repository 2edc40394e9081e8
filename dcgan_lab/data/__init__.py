from dcgan_lab.data.datamodule import ImageDataModule, UInt8Images, fit_to_size, to_float

__all__ = ["ImageDataModule", "UInt8Images", "fit_to_size", "to_float"]
