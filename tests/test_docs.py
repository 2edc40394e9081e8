"""What the docs tell a user to type: every `python train.py ...` / `python evaluate.py ...` command in the README
files and every `group=option` they name passes the command-line check (options that exist, '+' exactly where a
group is appended), so a renamed option or a wrong '+' in the docs fails here, not on a reader's machine."""
from __future__ import annotations

import re
import shlex

import pytest
import torch
from hydra.utils import instantiate

from dcgan_lab.command_line import _options, command_line_problem, quote_paths
from dcgan_lab import CONF_DIR
from tests.conftest import ROOT

DOCS = ["README.md", "DEVELOPERS.md", *sorted(str(p.relative_to(ROOT)) for p in CONF_DIR.glob("*/README.md")),
        "multirun/README.md"]
COMMAND = re.compile(r"python (train|evaluate)\.py(?P<args>[^`\n]*)")
TOKEN = re.compile(r"`(\+?[a-z_]+(?:/[a-z_]+)?=[^`\s]+)`")
PLACEHOLDER = re.compile(r"<[^>]*>")


def _concrete(arg: str) -> str:
    """`+sweep=<name>` -> an existing option of the group; `ckpt=outputs/<date>/<time>` -> a path."""
    key, sep, value = arg.partition("=")
    if not sep or "<" not in value:
        return arg
    group = key.lstrip("+")
    if (CONF_DIR / group).is_dir():
        return f"{key}={_options(group)[0]}"
    return f"{key}={PLACEHOLDER.sub('x', value)}"


def _commands() -> list[tuple[str, str, list[str]]]:
    found = []
    for doc in DOCS:
        for match in COMMAND.finditer((ROOT / doc).read_text()):
            args = re.split(r"\s#\s", match["args"])[0].strip()  # a trailing comment
            if args.endswith("\\"):
                continue  # continued on the next line
            words = [_concrete(w) for w in shlex.split(args)]  # flags too: -m matters
            found.append((doc, match.group(0).strip(), words))
    return found


def _tokens() -> list[tuple[str, str]]:
    return sorted({(doc, token) for doc in DOCS for token in TOKEN.findall((ROOT / doc).read_text())
                   if (CONF_DIR / token.partition("=")[0].lstrip("+")).is_dir()})


@pytest.mark.parametrize("doc, line, args", _commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_documented_command_passes_the_command_line_check(doc, line, args):
    config = "evaluate" if "evaluate.py" in line else "config"
    assert command_line_problem(quote_paths(args), config) is None, (doc, line)


@pytest.mark.parametrize("doc, token", _tokens())
def test_every_documented_group_choice_names_an_option_in_the_form_hydra_takes(doc, token):
    config = "evaluate" if doc.endswith("evaluate.md") else "config"
    assert command_line_problem(["-m", _concrete(token)], config) is None, (doc, token)  # -m: a +sweep= token too



ALONE = re.compile(r"alone[^:`]*?(?::|with e\.g\.)\s*`?([^`]+?)`?\s*$")  # `... alone: <overrides>`


@pytest.mark.parametrize("path", sorted(str(p.relative_to(CONF_DIR)) for group in ("activation", "norm")
                                        for p in (CONF_DIR / group).glob("*.yaml")))
def test_the_one_network_alone_line_of_each_activation_and_norm_builds(path, make_cfg):
    """conf/activation/elu.yaml said `activation.d._target_=torch.nn.ELU` for ELU in D alone: on the default
    activation=dcgan, D's node keeps LeakyReLU's negative_slope, and the run stopped with a TypeError."""
    group = path.split("/")[0]
    header = (CONF_DIR / path).read_text().splitlines()[:2]
    for overrides in [m.group(1) for line in header for m in ALONE.finditer(line)]:
        cfg = make_cfg(*overrides.split(), fast=False)
        for net in "gd":
            factory = instantiate(cfg[group][net])
            assert isinstance(factory() if group == "activation" else factory(8), torch.nn.Module), overrides
