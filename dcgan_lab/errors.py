"""User-facing errors: each carries one line saying what is wrong and what to do."""


class LabError(Exception):
    """A problem with the user's input or environment; the CLI prints it as one line and exits 2."""


class ConfigError(LabError):
    pass


class DataError(LabError):
    pass
