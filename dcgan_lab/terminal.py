"""What the console can show: shared by the training progress (pipeline) and the data decoding bar (data.sources),
which must not import each other (data sits upstream of the pipeline)."""
from __future__ import annotations


def redraws_in_place(stream) -> bool:
    """A terminal, or a notebook cell's output (ipykernel's stream, which tqdm redraws in place, though not a tty)."""
    return stream.isatty() or type(stream).__module__.startswith("ipykernel.")
