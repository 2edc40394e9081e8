"""One checkpoint reader, the safe one (checkpoint_io.read_checkpoint, torch.load(weights_only=True)).

A checkpoint from elsewhere that carries a pickled object is refused with one line by resume, by the
Trainer's own restore and by evaluate.py, and the object's code never runs; the reference-statistics cache
never runs such code either.
"""
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from dcgan_lab.checkpoint_io import AtomicCheckpointIO
from dcgan_lab.errors import DataError
from dcgan_lab.metrics.cache import ReferenceCache
from dcgan_lab.pipeline import train
from tests.conftest import CONF_DIR, FAST, compose_config


def leave_marker(path: str) -> None:
    Path(path).touch()


class RunsCodeWhenUnpickled:
    """Unpickling this calls leave_marker(marker): what any object in an unsafe checkpoint could do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return leave_marker, (self.marker,)


@pytest.fixture(scope="module")
def booby_trapped(tmp_path_factory) -> tuple[Path, Path]:
    """(a real checkpoint of this lab with one pickled object added, the file that object's code would create)."""
    folder = tmp_path_factory.mktemp("trapped")
    run = folder / "run"
    train(compose_config(run, FAST + ["trainer.limit_train_batches=1"]))
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    marker = folder / "code_ran"
    checkpoint["extra"] = RunsCodeWhenUnpickled(marker)
    trapped = folder / "downloaded" / "checkpoints" / "last.ckpt"
    trapped.parent.mkdir(parents=True)
    torch.save(checkpoint, trapped)
    return trapped, marker


def refusal(path: Path) -> str:
    return (f"refusing checkpoint {path}: it holds a pickled Python object ({__name__}.leave_marker), not only "
            "tensors and plain data, and opening it would run that object's code; use checkpoints written by this lab")


def evaluate_config(ckpt: Path, cache_dir: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("evaluate", overrides=[f"ckpt={ckpt}", f"paths.cache_dir={cache_dir}", "paths.output_dir=.", "device=cpu"])


def test_resume_and_evaluate_refuse_a_checkpoint_carrying_a_pickled_object(booby_trapped, make_cfg, tmp_path, capsys):
    from dcgan_lab.metrics.checkpoints import main as evaluate_main
    from dcgan_lab.pipeline import main as train_main

    trapped, marker = booby_trapped
    runs = {
        "evaluate.py": lambda: evaluate_main(evaluate_config(trapped, tmp_path / "cache")),
        "train.py ckpt_path=": lambda: train_main(make_cfg(f"ckpt_path={trapped}")),
    }
    for entry, run in runs.items():
        with pytest.raises(SystemExit) as exit_info:
            run()
        assert exit_info.value.code == 2, entry
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert err == [f"error: {refusal(trapped)}"], entry
    # The Trainer's own restore reads through the same reader.
    with pytest.raises(DataError) as info:
        AtomicCheckpointIO().load_checkpoint(trapped)
    assert str(info.value) == refusal(trapped)
    assert not marker.exists()
    # No results: a refused single run writes nothing, not even status.json (README: Bad input); evaluate neither.
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
    assert sorted(p.name for p in trapped.parent.iterdir()) == ["last.ckpt"]
    # The trap is real: an unsafe load (weights_only=False) runs the object's code.
    torch.load(trapped, weights_only=False)
    assert marker.exists()


def test_a_file_that_is_no_checkpoint_is_one_plain_line(make_cfg, tmp_path, capsys):
    """ckpt_path= at a text file, a PNG or a plain pickle (of an object whose code would run): one line, without
    torch's warning about the pickle protocol or its reason for a text file (`KeyError: 101`), and nothing runs."""
    from PIL import Image

    from dcgan_lab.pipeline import main as train_main

    marker = tmp_path / "code_ran"
    files = {"notes.txt": lambda path: path.write_text("hello\n"),
             "grid.png": lambda path: Image.new("L", (8, 8)).save(path),
             "object.pkl": lambda path: path.write_bytes(pickle.dumps(RunsCodeWhenUnpickled(marker), protocol=4))}
    for name, write in files.items():
        write(tmp_path / name)
        with pytest.raises(SystemExit) as exit_info:
            train_main(make_cfg(f"ckpt_path={tmp_path / name}", run_dir=tmp_path / f"run_{name}"))
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.splitlines() == [
            f"error: cannot read checkpoint {tmp_path / name} (not a torch file); it is truncated or not a checkpoint"]
    assert not marker.exists()


def test_evaluate_reads_a_checkpoint_of_this_lab_and_samples_from_the_ema_generator_when_there_is_one(booby_trapped, tmp_path):
    from dcgan_lab.metrics.checkpoints import load_generator

    trapped, _ = booby_trapped
    checkpoint = torch.load(trapped, weights_only=False)
    del checkpoint["extra"]
    state = checkpoint["state_dict"]
    torch.save(checkpoint, tmp_path / "plain.ckpt")
    saved = load_generator(tmp_path / "plain.ckpt")
    assert saved.info["generator"] == "generator" and saved.config["model"]["generator"]["width"] == 8
    torch.testing.assert_close(saved.generator.state_dict()["body.0.weight"], state["generator.body.0.weight"])
    torch.testing.assert_close(saved.fixed_z, state["fixed_z"])  # the run's grid latents, for its walk
    # The same checkpoint with an EMA copy of G (its weights shifted by 1): evaluation samples from the copy.
    state.update({"generator_ema." + k[len("generator."):]: v + 1 for k, v in list(state.items())
                  if k.startswith("generator.") and v.is_floating_point()})
    state.update({"generator_ema." + k[len("generator."):]: v for k, v in list(state.items())
                  if k.startswith("generator.") and not v.is_floating_point()})
    torch.save(checkpoint, tmp_path / "ema.ckpt")
    saved = load_generator(tmp_path / "ema.ckpt")
    assert saved.info["generator"] == "generator_ema"
    torch.testing.assert_close(saved.generator.state_dict()["body.0.weight"], state["generator.body.0.weight"] + 1)


def test_reference_cache_never_runs_code_from_its_files(tmp_path, caplog):
    cache = ReferenceCache(tmp_path)
    key = {"what": "classifier", "dataset": "mnist_mini", "n_reference": 100}
    path = cache.path_for(key)
    path.parent.mkdir(parents=True)
    marker = tmp_path / "code_ran"
    torch.save({"key": key, "value": {"mu": RunsCodeWhenUnpickled(marker)}}, path)
    with caplog.at_level(logging.WARNING, logger="dcgan_lab.metrics.cache"):
        value = cache.get(key, lambda: {"mu": np.full(3, 2.0), "features": torch.ones(2, 3)})
    assert not marker.exists()
    assert [r.getMessage() for r in caplog.records] == [f"reference statistics at {path} unreadable (UnpicklingError); recomputing"]
    # Rewritten with tensors only; NumPy arrays come back as arrays.
    again = cache.get(key, lambda: pytest.fail("the rewritten cache file should be read"))
    assert isinstance(again["mu"], np.ndarray) and again["mu"].dtype == np.float64
    np.testing.assert_array_equal(again["mu"], value["mu"])
    torch.testing.assert_close(again["features"], torch.ones(2, 3))
