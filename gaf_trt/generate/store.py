"""The dataset folder of ``gaf-trt generate``: shard files, their seals, ``dataset.json``.

Layout of ``OUT``::

    dataset.json                  the job (arguments, checkpoint hash), finished shards, result
    shards/00000000-00001024.npz  a shard's images and labels   (npz / both)
    shards/00000000-00001024.json its seal: file hashes; written last, after the files
    png/000/000123.png            sample 123 (folders of 1000 by global index; png / both)
    samples.npz                   arr_0 uint8 [N, H, W, 3] in sample order, labels [N] (npz / both)
    labels.txt                    one label per line in sample order (png / both)

Every file is written atomically. A shard counts as finished only when its seal exists and
every file it lists has the listed sha256, so a killed worker leaves at worst a shard without
a seal, which the next run redoes. Only the driver (in-process, torchrun rank 0, the Ray
driver) writes ``dataset.json``; workers write their shards' files and seals.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from gaf_trt.errors import ConfigError
from gaf_trt.io.files import atomic_write, file_sha256, write_json
from gaf_trt.records import GENERATE

RECORD = GENERATE.record
FINAL_NPZ = "samples.npz"
LABELS_TXT = "labels.txt"
PNG_DIR = "png"
PNG_PER_FOLDER = 1000
#: Fixed zip member time, so that an npz's bytes depend on its arrays only.
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def shard_stem(start: int, stop: int) -> str:
    return f"shards/{start:08d}-{stop:08d}"


def png_name(i: int) -> str:
    return f"{PNG_DIR}/{i // PNG_PER_FOLDER:03d}/{i:06d}.png"


def identity_digest(identity: dict[str, Any]) -> str:
    """sha256 of the job identity (canonical JSON)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------- deterministic npz


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(dtype),
                                               "fortran_order": False, "shape": shape})
    return buf.getvalue()


def write_npz(path: Path, arrays: dict[str, Iterable[np.ndarray]],
              shapes: dict[str, tuple[tuple[int, ...], np.dtype]]) -> Path:
    """Write an uncompressed ``.npz`` whose bytes depend only on the arrays: each member is
    streamed from its chunks (C order, concatenated along axis 0), fixed zip times."""
    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, chunks in arrays.items():
                shape, dtype = shapes[name]
                info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_TIME)
                with zf.open(info, "w", force_zip64=True) as f:
                    f.write(_npy_header(shape, dtype))
                    for chunk in chunks:
                        f.write(np.ascontiguousarray(chunk, dtype=dtype).tobytes())

    return atomic_write(path, write)


def save_npz(path: Path, **arrays: np.ndarray) -> Path:
    return write_npz(path, {k: [v] for k, v in arrays.items()},
                     {k: (v.shape, v.dtype) for k, v in arrays.items()})


def save_png_array(arr: np.ndarray, path: Path) -> Path:
    """``[H, W, 3]`` uint8 -> PNG (no metadata: bytes depend on the pixels only)."""
    from PIL import Image

    return atomic_write(path, lambda tmp: Image.fromarray(arr).save(tmp, format="PNG"))


# --------------------------------------------------------------------------- shards


def write_shard(out: Path, digest: str, start: int, stop: int, images: np.ndarray,
                labels: np.ndarray, fmt: str, on_files: Any = None) -> dict[str, Any]:
    """Write a shard's files, then its seal; returns the seal. ``on_files(start)`` is called
    between the two (a test hook for a kill at that point)."""
    files: dict[str, str] = {}
    if fmt in ("npz", "both"):
        name = f"{shard_stem(start, stop)}.npz"
        files[name] = file_sha256(save_npz(out / name, images=images, labels=labels))
    if fmt in ("png", "both"):
        for k, i in enumerate(range(start, stop)):
            files[png_name(i)] = file_sha256(save_png_array(images[k], out / png_name(i)))
    if on_files is not None:
        on_files(start)
    seal = {"job": digest, "start": start, "stop": stop, "shape": list(images.shape[1:]),
            "labels": labels.tolist(), "files": files}
    write_json(out / f"{shard_stem(start, stop)}.json", seal)
    return seal


def read_seal(out: Path, digest: str, start: int, stop: int, *, verify: bool = True,
              labels: list[int] | None = None) -> dict[str, Any] | None:
    """The seal of a finished shard of this job, or None (missing, another job's, a range
    that does not match, labels other than ``labels`` (the job's, when given), or a file
    whose hash differs)."""
    try:
        seal = json.loads((out / f"{shard_stem(start, stop)}.json").read_text())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(seal, dict) or seal.get("job") != digest or \
            (seal.get("start"), seal.get("stop")) != (start, stop) or \
            not isinstance(seal.get("files"), dict) or \
            not isinstance(seal.get("labels"), list) or len(seal["labels"]) != stop - start:
        return None
    if labels is not None and seal["labels"] != list(labels):
        return None
    if verify:
        for name, sha in seal["files"].items():
            p = out / name
            if not p.is_file() or file_sha256(p) != sha:
                return None
    return seal


def shard_entry(seal: dict[str, Any]) -> dict[str, Any]:
    """A finished shard as ``dataset.json`` lists it: range, and one hash over its files."""
    h = hashlib.sha256()
    for name in sorted(seal["files"]):
        h.update(f"{name}:{seal['files'][name]}\n".encode())
    return {"start": seal["start"], "stop": seal["stop"], "sha256": h.hexdigest(),
            "files": len(seal["files"])}


# --------------------------------------------------------------------------- dataset.json


def read_record(out: Path) -> dict[str, Any] | None:
    try:
        rec = json.loads((out / RECORD).read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return rec if isinstance(rec, dict) and rec.get("writer") == "gaf-trt" else None


#: What a dataset folder holds besides its record (the files a job writes or replaces).
DATASET_FILES = ("shards", FINAL_NPZ, LABELS_TXT, PNG_DIR)


def check_dataset_folder(out: Path, what: str = "--out") -> None:
    """Refuse a folder holding dataset files but no readable ``dataset.json``: they belong to
    no job that can be checked, and a job writing there would mix with them."""
    if not out.is_dir() or read_record(out) is not None:
        return
    found = [name for name in DATASET_FILES if (out / name).exists()]
    if found:
        raise ConfigError(f"{what} {out} holds dataset files ({', '.join(found)}) but no "
                          f"{RECORD}, so they belong to no job that can be checked; use "
                          "another folder (or remove them)")


def check_same_job(out: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """Refuse a folder that holds another job's dataset; returns its record (or None)."""
    rec = read_record(out)
    if rec is None:
        return None
    old = rec.get("job", {})
    if old != identity:
        keys = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
        raise ConfigError(f"{out} holds a dataset generated with other arguments (differs in: "
                          f"{', '.join(keys)}); use another --out or the same arguments")
    return rec


def write_record(out: Path, identity: dict[str, Any], args: dict[str, Any],
                 shards: dict[int, dict[str, Any]], extra: dict[str, Any]) -> Path:
    rec = {"writer": "gaf-trt", "format_version": 1, "job": identity, "args": args,
           "digest": identity_digest(identity),
           "shards": [shards[s] for s in sorted(shards)], **extra}
    return write_json(out / RECORD, rec)


def assemble(out: Path, shards: list[tuple[int, int]], seals: dict[int, dict[str, Any]],
             fmt: str) -> dict[str, str]:
    """The whole-dataset files from the finished shards (``samples.npz`` streamed shard by
    shard; ``labels.txt``); returns ``{name: sha256}``."""
    n = shards[-1][1]
    image_shape = tuple(int(v) for v in seals[shards[0][0]]["shape"])
    labels = np.concatenate([np.asarray(seals[s]["labels"], dtype=np.int64) for s, _ in shards])
    files: dict[str, str] = {}
    if fmt in ("npz", "both"):
        def chunks():
            for s, e in shards:
                with np.load(out / f"{shard_stem(s, e)}.npz") as z:
                    yield z["images"]

        path = write_npz(out / FINAL_NPZ, {"arr_0": chunks(), "labels": [labels]},
                         {"arr_0": ((n, *image_shape), np.dtype(np.uint8)),
                          "labels": ((n,), np.dtype(np.int64))})
        files[FINAL_NPZ] = file_sha256(path)
    if fmt in ("png", "both"):
        text = "".join(f"{int(y)}\n" for y in labels)
        files[LABELS_TXT] = file_sha256(atomic_write(out / LABELS_TXT,
                                                     lambda tmp: tmp.write_text(text)))
    return files
