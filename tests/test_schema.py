"""The config schema (dcgan_lab/schema.py): one bad value per constrained key, generated from the table itself,
gets one line and exit status 2 with nothing written; every numeric and every yes/no value in conf/ has a domain there."""
from __future__ import annotations

import copy
from fnmatch import fnmatch
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from dcgan_lab.config import compose_run_config, flat_values
from dcgan_lab.pipeline import main
from dcgan_lab.schema import SCHEMA, domain_of
from tests.conftest import CONF_DIR, FAST, compose_config

RESULTS = ("config.yaml", "metrics.csv", "checkpoints", "samples", "fixed_noise.pt")


def _override(key: str, value) -> str:
    if isinstance(value, list):
        return f"{key}=[{','.join(str(v) for v in value)}]"
    return f"{key}={value}"


def _concrete(pattern: str) -> list[str]:
    """A schema key, or the default config's keys that a pattern entry (`loss.*_weight`) covers."""
    if "*" not in pattern:
        return [pattern]
    return sorted(k for k in flat_values(compose_run_config("/tmp/schema-keys", [])) if fnmatch(k, pattern))


KEYS = {key: pattern for pattern in SCHEMA for key in _concrete(pattern)}
CASES = [(key, value) for key, pattern in KEYS.items() for value in SCHEMA[pattern].bad_values()]


@pytest.fixture(scope="module")
def composed(tmp_path_factory):
    """composed(overrides) -> the config Hydra composes from them, writing into one run folder of this module.

    A case's bad value is set on a copy, parsed as Hydra parses a command-line value: the cases share a few bases,
    and composing each of them anew took half the suite's time for this one test."""
    run_dir = tmp_path_factory.mktemp("schema") / "run"
    bases = {}

    def compose(overrides: tuple[str, ...]):
        if overrides not in bases:
            bases[overrides] = compose_config(run_dir, list(overrides))
        return copy.deepcopy(bases[overrides]), run_dir

    return compose


@pytest.mark.parametrize("key, value", CASES, ids=[f"{k}={v}" for k, v in CASES])
def test_every_constrained_value_outside_its_domain_is_one_line_and_writes_nothing(composed, capsys, key, value):
    base = [o for o in FAST if o.split("=")[0] not in key]  # e.g. keep the progress bar for its own keys
    cfg, run_dir = composed(tuple(base + list(SCHEMA[KEYS[key]].needs)))
    assert OmegaConf.select(cfg, key, default="<absent>") != "<absent>", f"{key} is not in the composed config"
    override = OverridesParser.create().parse_overrides([_override(key, value)])[0]
    OmegaConf.update(cfg, key, override.value(), merge=False)
    with pytest.raises(SystemExit) as exit_info:
        main(cfg)
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}="), lines
    assert "must be" in lines[0] or "is not supported" in lines[0]
    assert [name for name in RESULTS if (run_dir / name).exists()] == []


def test_a_bad_value_typed_on_the_command_line_composes_to_the_same_one_line(tmp_path, capsys):
    """The cases above set their value on a composed config; here one goes through Hydra's whole composition."""
    cfg = compose_config(tmp_path / "run", FAST + ["loss.r1_weight=-1"])
    with pytest.raises(SystemExit) as exit_info:
        main(cfg)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().startswith("error: loss.r1_weight=-1")
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_every_default_is_inside_its_domain(make_cfg):
    assert {"loss.gp_weight", "loss.r1_weight", "loss.perceptual_weight"} <= set(KEYS)  # the pattern entry expands
    configs = {}
    for key, pattern in KEYS.items():
        domain = SCHEMA[pattern]
        if domain.needs not in configs:
            configs[domain.needs] = make_cfg(*domain.needs, fast=False)
        value = OmegaConf.select(configs[domain.needs], key)
        value = list(value) if OmegaConf.is_list(value) else value
        assert domain.problem(value) is None, (key, value)


# Numeric or yes/no values whose domain is the whole type, or another key's business (checked across groups in config.py).
NO_DOMAIN = {
    "dataset.num_classes": "derived from the dataset",
    "model.attention_res": "a resolution inside the network: config.py checks it against dataset.image_size",
    "model.growth.start_resolution": "checked against dataset.image_size in config.py",
    "model.num_classes": "derived from model.conditional and the dataset",
    "activation.d.negative_slope": "activation=dcgan's fixed 0.2 (activation=leaky_relu sets activation.slope)",
    "trainer.devices": "Lightning checks it against the machine",
    "trainer.limit_train_batches": "Lightning's own: a batch count or a fraction",
    "trainer.num_sanity_val_steps": "no validation loop",
    "trainer.num_nodes": "Lightning checks it against the cluster",
    "callbacks.model_checkpoint.save_top_k": "Lightning's own (-1 = every checkpoint)",
    "logger.wandb.tags": "free text",
}
OPTIONS = {group: sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml")) for group in
           ("model", "optimizer", "schedule", "augment", "loss", "norm", "activation", "dataset", "metrics", "trainer",
            "logger", "callbacks")}


def _constrained_leaves(node, prefix=""):
    """The numeric and the yes/no leaves (Hydra's own `_partial_` flags aside)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key != "_partial_":
                yield from _constrained_leaves(value, f"{prefix}{key}.")
    elif isinstance(node, list):
        if node and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in node):
            yield prefix[:-1]
    elif isinstance(node, (int, float)):  # a bool too
        yield prefix[:-1]


@pytest.mark.parametrize("group", list(OPTIONS))
def test_every_numeric_and_yes_no_value_of_every_option_has_a_domain(make_cfg, group):
    uncovered = set()
    for option in OPTIONS[group]:
        extra = ["dataset.path=/tmp"] if option == "image_folder" else []
        cfg = make_cfg(f"{group}={option}", *extra, fast=False)
        # literal values only: an interpolation (${model.ngf}) copies a value that has its own entry
        values = {k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k not in ("hydra", "module", "paths")}
        uncovered |= {key for key in _constrained_leaves(values) if domain_of(key) is None and key not in NO_DOMAIN}
    assert not uncovered, f"numeric or yes/no config values without a domain in dcgan_lab/schema.py: {sorted(uncovered)}"


def test_yes_no_values_take_true_or_false_and_lightnings_own_extras():
    """A yes/no key takes a boolean only ('yes', 1 or a quoted 'true' would have been read as a yes by `if value:`);
    trainer.deterministic also takes Lightning's 'warn', trainer.fast_dev_run a number of batches."""
    from dcgan_lab.schema import problems

    good = {"augment.real.flip": True, "resume": False, "trainer.deterministic": "warn", "trainer.fast_dev_run": 3,
            "callbacks.compile.enabled": False}
    assert problems(good) == []
    bad = {"augment.real.flip": "yes", "model.conditional": 1, "resume": "true", "trainer.deterministic": "maybe",
           "trainer.fast_dev_run": -1}
    assert problems(bad) == [
        "resume='true' must be true or false.",
        "model.conditional=1 must be true or false.",
        "augment.real.flip='yes' must be true or false.",
        "trainer.fast_dev_run=-1 must be true or false, or a number of batches (an integer >= 0; 0 = off).",
        "trainer.deterministic='maybe' must be true or false, or 'warn'.",
    ]
