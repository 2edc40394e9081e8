"""Read the records of an offline W&B run file (run-<id>.wandb), to check what `wandb sync` would upload.

The file is a LevelDB-style log: a 7-byte header (":W&B", magic, version), then 32 KiB blocks of chunks,
each with a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last) around a protobuf Record.
"""
from __future__ import annotations

import json
import struct
import time
from pathlib import Path

from google.protobuf.message import DecodeError
from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
FULL, LAST = 1, 4


def read_records(path: str | Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, chunks = 7, []
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunks.append(data[pos + 7:pos + 7 + length])
        pos += 7 + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            yield record


def wait_until_written(run_file: str | Path, timeout_s: float = 60.0) -> None:
    """wandb.finish() can return before W&B's service has written the run file out: wait for its exit record."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if any(record.WhichOneof("record_type") == "exit" for record in read_records(run_file)):
                return
        except (DecodeError, AssertionError):  # the file or a record still being written
            pass
        assert time.monotonic() < deadline, f"{run_file} has no exit record after {timeout_s} s"
        time.sleep(0.2)


def offline_run(run_file: str | Path) -> dict:
    """{'group', 'tags', 'name', 'job_type', 'config': {key: json}, 'summary': {key: json}} of one offline run."""
    wait_until_written(run_file)
    run = {"config": {}, "summary": {}}
    for record in read_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(group=record.run.run_group, tags=list(record.run.tags), name=record.run.display_name,
                       job_type=record.run.job_type)
            # A config set before the run record is written travels inside it, not as a config record.
            run["config"].update({item.key: item.value_json for item in record.run.config.update})
        elif kind == "config":
            run["config"].update({item.key: item.value_json for item in record.config.update})
        elif kind == "summary":
            run["summary"].update({item.key or "/".join(item.nested_key): item.value_json for item in record.summary.update})
    return run


def history(run_file: str | Path) -> list[dict]:
    """Every logged row (one per wandb.log call), in order: {key: decoded JSON value}.

    A logged dict (an image list, a table) arrives as one item per field, under nested_key [key, field, ...].
    """
    wait_until_written(run_file)
    rows = []
    for record in read_records(run_file):
        if record.WhichOneof("record_type") != "history":
            continue
        row: dict = {}
        for item in record.history.item:
            *parents, leaf = [item.key] if item.key else list(item.nested_key)
            node = row
            for parent in parents:
                node = node.setdefault(parent, {})
            node[leaf] = json.loads(item.value_json)
        rows.append(row)
    return rows


def the_offline_run(folder: str | Path) -> tuple[Path, Path]:
    """(run folder, run-*.wandb file) of the one offline run under <folder>/wandb."""
    runs = sorted((Path(folder) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, f"expected one offline run in {folder}/wandb, found {[r.name for r in runs]}"
    return runs[0], next(runs[0].glob("run-*.wandb"))


def logged_images(run_dir: Path, run_file: Path) -> dict[str, list[tuple[Path, str, dict]]]:
    """{key: [(media file, caption, the row it was logged in), ...]} in logging order."""
    images: dict[str, list] = {}
    for row in history(run_file):
        for key, value in row.items():
            if isinstance(value, dict) and value.get("_type") == "images/separated":
                captions = value.get("captions") or [""] * len(value["filenames"])
                for filename, caption in zip(value["filenames"], captions):
                    images.setdefault(key, []).append((run_dir / "files" / filename, caption, row))
    return images


def logged_checkpoints(run_file: Path) -> list[tuple[str, str]]:
    """(original file name, md5 digest as W&B writes it: base64) of each checkpoint artifact the run logged."""
    wait_until_written(run_file)
    logged = []
    for record in read_records(run_file):
        if record.WhichOneof("record_type") == "artifact" and record.artifact.type == "model":
            metadata = json.loads(record.artifact.metadata)
            logged += [(metadata["original_filename"], entry.digest) for entry in record.artifact.manifest.contents]
    return logged


def logged_videos(run_dir: Path, run_file: Path) -> dict[str, list[tuple[Path, str, dict]]]:
    """{key: [(media file, caption, the row it was logged in), ...]} of the animations (wandb.Video) logged."""
    videos: dict[str, list] = {}
    for row in history(run_file):
        for key, value in row.items():
            if isinstance(value, dict) and value.get("_type") == "video-file":
                videos.setdefault(key, []).append((run_dir / "files" / value["path"], value.get("caption", ""), row))
    return videos
