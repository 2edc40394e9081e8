from dcgan_lab.callbacks.samples import SampleGrid
from dcgan_lab.callbacks.speed import ChannelsLast, Compile, Throughput

__all__ = ["ChannelsLast", "Compile", "SampleGrid", "Throughput"]
