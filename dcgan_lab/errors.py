"""User-facing errors: each carries one line saying what is wrong and what to do."""


class LabError(Exception):
    """A problem with the user's input or environment; the CLI prints it as one line and exits 2."""


class ConfigError(LabError):
    pass


class DataError(LabError):
    pass


def not_a_folder(path) -> str:
    """The line for a dataset.path that is no folder: the data source's and the config check's (a conditional run
    whose folder is missing has no classes, and is refused before the data is read)."""
    return f"dataset.path={path} is not a folder; point dataset.path at a folder of images"


class AlreadyFinished(ConfigError):
    """The checkpoint to resume has trained all that the run asks for: a single run says so; a sweep job resubmitted
    with resume=true keeps its record and the sweep goes on."""


def lab_error_behind(exc: BaseException) -> LabError | None:
    """The LabError that `exc` is or wraps (Hydra's instantiate re-raises a constructor's error as its cause)."""
    while exc is not None:
        if isinstance(exc, LabError):
            return exc
        exc = exc.__cause__
    return None


def is_refused_input(exc: BaseException) -> bool:
    """Whether `exc` says the run's input was refused (a config value, the data, a checkpoint), not that it failed while running."""
    return isinstance(lab_error_behind(exc), (ConfigError, DataError))


class Interrupted(SystemExit):
    """The run was stopped by a signal, not by an error: Ctrl-C (SIGINT), or a scheduler's stop or preemption
    (SIGTERM, what SLURM sends). status.json records it as `interrupted`, and the process exits with 128 + the
    signal's number (130, 143), as a shell reports a process that a signal ended; a sweep stops there too."""

    def __init__(self, signum: int, message: str, g_steps: int, train_time_s: float):
        super().__init__(128 + signum)
        self.signum, self.message, self.g_steps, self.train_time_s = signum, message, g_steps, train_time_s

    def __str__(self) -> str:
        return self.message
