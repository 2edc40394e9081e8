"""The command line checked before Hydra runs: a misspelt option or key gets the lab's one `error:` line with the
closest valid names, and exit status 2 (Hydra's own report is several lines and exits 1).

    python train.py loss=hing        -> error: loss=hing is not an option of loss: did you mean loss=hinge? ...
    python train.py model.atention=true -> error: model.atention is not a config key: did you mean model.attention? ...
"""
from __future__ import annotations

import difflib
import functools
import logging
import sys
from dcgan_lab import CONF_DIR


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _did_you_mean(word: str, choices: list[str], prefix: str) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean {prefix}{close[0]}? " if close else ""


def _values(override) -> list[str]:
    """The option names one group override asks for (every choice of a sweep, every item of a list such as
    `logger=[wandb,tensorboard]`), or [] for globs and ranges."""
    value = override.value()
    choices = getattr(value, "list", []) if override.is_sweep_override() else [] if value is None else [value]
    return [str(item) for choice in choices for item in (choice if isinstance(choice, list) else [choice])]


def _multirun(args: list[str]) -> bool:
    return any(a in ("-m", "--multirun") or a.replace(" ", "") == "hydra.mode=MULTIRUN" for a in args)


def _overrides(args: list[str]) -> list[str]:
    """The overrides among the arguments: `key=value` or `~key`. Flags (`-m`) and the values Hydra's flags take
    (`--cfg job`, `--info defaults`, `-p model`) are not overrides."""
    return [a for a in args if not a.startswith("-") and ("=" in a or a.startswith("~"))]


@functools.lru_cache(maxsize=None)  # read once per process, however many overrides ask
def _defaults(config_name: str) -> dict[str, str | None]:
    """The groups the config's defaults list chooses and their options (`loss: bce`, `ablation: null`)."""
    from omegaconf import OmegaConf

    defaults = OmegaConf.to_container(OmegaConf.load(CONF_DIR / f"{config_name}.yaml")).get("defaults", [])
    return {key: option for entry in defaults if isinstance(entry, dict) for key, option in entry.items()
            if not key.startswith("override ")}


def _options_with_key(group: str, path: list[str]) -> list[str]:
    """The options of `group` whose own YAML holds the key `path` (`model.attention`: dcgan and resnet)."""
    from omegaconf import OmegaConf

    owners = []
    for option in _options(group):
        node = OmegaConf.to_container(OmegaConf.load(CONF_DIR / group / f"{option}.yaml"))
        for part in path:
            node = node.get(part, KeyError) if isinstance(node, dict) else KeyError
        if node is not KeyError:
            owners.append(f"{group}={option}")
    return owners


def _plus_problem(override, config_name: str) -> str | None:
    """`+loss=hinge` (loss is chosen already; Hydra says "Multiple values for loss. To override a value use
    'override loss: hinge'") and `sweep=x` (sweep is appended, not chosen): the line says which form to write."""
    group, value = override.key_or_group, (_values(override) or ["<option>"])[0]
    chosen = group in _defaults(config_name)  # a group the defaults list chooses takes no '+'
    if override.is_add() and chosen:
        return (f"+{group}={value}: {group} is already in the defaults of conf/{config_name}.yaml, so choose it "
                f"without the '+': {group}={value}.")
    if not (override.is_add() or override.is_force_add() or chosen):
        if config_name != "config":  # evaluate.py: the checkpoint holds the training groups' choices
            groups = ", ".join(sorted(_defaults(config_name)))
            return f"{group}={value}: conf/{config_name}.yaml has no {group} group (its groups: {groups})."
        return (f"{group}={value}: {group} is not in the defaults of conf/{config_name}.yaml, so append it with a "
                f"'+': +{group}={value}.")
    return None


def command_line_problem(args: list[str], config_name: str = "config") -> str | None:
    """One line naming the first misspelt option or key in `args`, or None (Hydra reports anything else)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    try:
        overrides = OverridesParser.create().parse_overrides(_overrides(args))
    except Exception:  # a syntax error: Hydra's own message shows where
        return None
    overrides = [o for o in overrides if not o.key_or_group.startswith("hydra") and not o.is_delete()]
    groups = [o for o in overrides if (CONF_DIR / o.key_or_group).is_dir()]
    for override in groups:
        group, options = override.key_or_group, _options(override.key_or_group)
        for value in _values(override):
            if value not in options and value != "null":
                hint = _did_you_mean(value, options, f"{group}=")
                return f"{group}={value} is not an option of {group}: {hint}(options: {', '.join(options)})."
        if problem := _plus_problem(override, config_name):
            return problem
        if group == "sweep" and not _multirun(args):  # Hydra would run one job with the defaults, silently
            value = _values(override)[0]
            return (f"+sweep={value} is a sweep: start it with -m (python train.py -m +sweep={value}); without -m "
                    "it trains one run with the defaults.")
    keys = [o for o in overrides if o not in groups and not o.is_add() and not o.is_force_add()]
    if not keys:
        return None
    first_choices = [o.input_line if not o.is_sweep_override() else f"{'+' if o.is_add() else ''}{o.key_or_group}={_values(o)[0]}"
                     for o in groups if _values(o)]
    try:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name, overrides=first_choices)
    except Exception:  # some other composition problem: Hydra reports it
        return None
    finally:
        GlobalHydra.instance().clear()
    for override in keys:
        key = override.key_or_group
        parts = key.split(".")
        for depth, leaf in enumerate(parts):  # the first part of the key that is not there
            parent = ".".join(parts[:depth])
            node = OmegaConf.select(cfg, parent, default=None, throw_on_missing=False) if parent else cfg
            siblings = [str(k) for k in node.keys()] if OmegaConf.is_dict(node) else []
            if leaf not in siblings:  # keys() lists a required (???) value too
                break
        else:
            continue
        if depth and (owners := _options_with_key(parts[0], parts[1:])):  # `model=mlp model.attention=true`
            chosen = next((_values(o)[0] for o in groups if o.key_or_group == parts[0] and _values(o)),
                          _defaults(config_name).get(parts[0]))
            return (f"{key} is not a key of {parts[0]}={chosen}: only {' and '.join(owners)} "
                    f"{'has' if len(owners) == 1 else 'have'} it (e.g. {owners[0]} {key}=...).")
        guess = _did_you_mean(leaf, siblings, f"{parent}." if parent else "")
        listing = f"{parent or 'the config'} has: {', '.join(siblings[:12])}{', ...' if len(siblings) > 12 else ''}; "
        return f"{key} is not a config key: {guess}({listing}to add a new key write +{key}=...)."
    return None


# Values that are file paths. A sweep job's folder is named by its overrides (`ablation=hinge,seed=0`), and '=' or ','
# in an unquoted value is override syntax to Hydra (a parse error, or a sweep over path pieces), as is any letter
# beyond ASCII (`hydra.run.dir=runs/été`: LexerNoViableAltException): such a path is quoted (interpolations such as
# ${now:...} still resolve inside the quotes).
PATH_KEYS = ("ckpt", "ckpt_path", "images", "dataset.path", "metrics.inception_weights", "hydra.run.dir",
             "hydra.sweep.dir")
HYDRA_SYNTAX = set("=,[]{}()'\" ")


def quote_paths(args: list[str]) -> list[str]:
    """`ckpt=multirun/x/ablation=hinge,seed=0/checkpoints/last.ckpt` -> the same with the path in quotes. A list
    (`ckpt=[run_a,run_b]`) stays Hydra's list; quote its elements that hold ',' yourself (`ckpt=['a=b,c=d',e]`)."""
    quoted = []
    for arg in args:
        key, sep, value = arg.partition("=")
        is_list = value[:1] == "[" and value[-1:] == "]"
        is_quoted = len(value) > 1 and value[0] in "'\"" and value[-1] == value[0]
        # A path holding an apostrophe (`/data/Van Gogh's letters`) is quoted with double quotes.
        quote = '"' if "'" in value else "'"
        if (sep and key.lstrip("+~") in PATH_KEYS and (HYDRA_SYNTAX & set(value) or not value.isascii()) and quote not in value
                and not is_quoted and not is_list):
            arg = f"{key}={quote}{value}{quote}"
        quoted.append(arg)
    return quoted


def refuse(problem) -> None:
    """The lab's answer to bad input: one `error:` line on stderr (and in the run's train.log, when Hydra keeps one:
    a SLURM user reading only the log sees why the run ended), exit status 2."""
    line = f"error: {problem}"
    print(line, file=sys.stderr)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):  # not the console's: the line is printed once there
            handler.handle(logging.LogRecord("dcgan_lab", logging.ERROR, __file__, 0, line, None, None))
            handler.flush()
    sys.exit(2)


def exit_on_bad_command_line(config_name: str) -> None:
    sys.argv[1:] = quote_paths(sys.argv[1:])
    problem = command_line_problem(sys.argv[1:], config_name)
    if problem is not None:
        refuse(problem)


def exit_on_bad_values(cfg) -> None:
    """A single run whose config holds a bad value (`optimizer.lr_g=-1`, `dataset.image_size=48`): the pipeline's
    one `error:` line and exit 2, before torch's training stack and Lightning load (10 s on a slow CPU). A sweep's
    jobs are left to the pipeline, which records each refused job in its status.json and goes on with the others."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from dcgan_lab.config import validate
    from dcgan_lab.errors import ConfigError

    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return
    try:
        validate(cfg)
    except ConfigError as exc:
        refuse(exc)
