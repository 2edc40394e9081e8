"""Read the records of an offline W&B run file (run-<id>.wandb), to check what `wandb sync` would upload.

The file is a LevelDB-style log: a 7-byte header (":W&B", magic, version), then 32 KiB blocks of chunks,
each with a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last) around a protobuf Record.
"""
from __future__ import annotations

import struct
from pathlib import Path

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


def offline_run(run_file: str | Path) -> dict:
    """{'group', 'tags', 'name', 'config': {key: json}, 'summary': {key: json}} of one offline run."""
    run = {"config": {}, "summary": {}}
    for record in read_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(group=record.run.run_group, tags=list(record.run.tags), name=record.run.display_name)
        elif kind == "config":
            run["config"].update({item.key: item.value_json for item in record.config.update})
        elif kind == "summary":
            run["summary"].update({item.key or "/".join(item.nested_key): item.value_json for item in record.summary.update})
    return run
