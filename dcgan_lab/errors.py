"""User-facing errors: each carries one line saying what is wrong and what to do."""


class LabError(Exception):
    """A problem with the user's input or environment; the CLI prints it as one line and exits 2."""


class ConfigError(LabError):
    pass


class DataError(LabError):
    pass


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
