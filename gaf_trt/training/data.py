"""Datasets: sklearn digits, an image folder, CIFAR-10 (python pickles), a latent cache.

Each dataset gives ``get(indices) -> (x [B, C, S, S] float32 in [-1, 1] or latents,
y [B] long)``, ``len()``, ``class_names`` and ``sample_shape``. Batches are drawn by
:class:`ShardedSampler`, a deterministic distributed sampler whose position is a function
of the step, so a resumed run continues the same data order.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from gaf_trt.errors import ConfigError
from gaf_trt.io.images import resize_images
from gaf_trt.metrics.digits import load_digits_images
from gaf_trt.training.config import TrainConfig

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


class Dataset(Protocol):
    class_names: list[str]

    def __len__(self) -> int: ...
    def get(self, indices: Tensor) -> tuple[Tensor, Tensor]: ...
    @property
    def sample_shape(self) -> tuple[int, int, int]: ...


@dataclass
class TensorDataset:
    """In-memory ``images [N, C, S, S]`` and ``labels [N]``."""

    images: Tensor
    labels: Tensor
    class_names: list[str]

    def __len__(self) -> int:
        return self.images.shape[0]

    def get(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        return self.images[indices].float(), self.labels[indices]

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


def digits_dataset(size: int) -> TensorDataset:
    x, y = load_digits_images()
    return TensorDataset(resize_images(x, size) * 2 - 1, y, [str(i) for i in range(10)])


def _scan_folder(root: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    if not root.exists():
        raise ConfigError(f"dataset folder not found: {root}")
    if not root.is_dir():
        raise ConfigError(f"dataset path is not a folder: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ConfigError(f"dataset folder {root} is empty: it needs one sub-folder per class")
    items: list[tuple[Path, int]] = []
    for i, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*")
                       if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise ConfigError(f"class folder {root / name} has no images "
                              f"({', '.join(sorted(IMAGE_EXTENSIONS))})")
        items += [(f, i) for f in files]
    return items, classes


def load_image(path: Path, size: int, channels: int) -> Tensor:
    """One image as ``[C, size, size]`` in ``[0, 1]`` (center crop to square, then resize)."""
    from PIL import Image

    from gaf_trt.io.images import open_image

    with open_image(path) as im:
        im = im.convert("L" if channels == 1 else "RGB")
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        im = im.resize((size, size), Image.BICUBIC)
        arr = np.asarray(im, dtype=np.float32) / 255.0
    t = torch.from_numpy(arr.copy())
    return t.unsqueeze(0) if channels == 1 else t.permute(2, 0, 1)


def folder_dataset(root: str | Path, size: int, channels: int) -> TensorDataset:
    """Every readable image under ``root/<class>/``; unreadable files (and images over
    Pillow's decompression-bomb limit) are skipped and counted."""
    from PIL import Image, UnidentifiedImageError

    items, classes = _scan_folder(Path(root))
    images, labels, skipped = [], [], 0
    for path, label in items:
        try:
            images.append(load_image(path, size, channels))
            labels.append(label)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError,
                Image.DecompressionBombError):
            skipped += 1
    if skipped:
        log.warning("skipped %d unreadable image file(s) under %s", skipped, root)
    if not images:
        raise ConfigError(f"no readable images under {root} ({skipped} unreadable)")
    counts = torch.bincount(torch.tensor(labels), minlength=len(classes))
    empty = [classes[i] for i in range(len(classes)) if counts[i] == 0]
    if empty:
        raise ConfigError(f"class folder(s) with no readable images: {', '.join(empty)}")
    ds = TensorDataset(torch.stack(images) * 2 - 1, torch.tensor(labels), classes)
    ds.skipped = skipped  # type: ignore[attr-defined]
    return ds


def cifar10_dataset(root: str | Path, size: int = 32) -> TensorDataset:
    """CIFAR-10 from its python-pickle layout (``data_batch_1..5`` and ``batches.meta``)."""
    root = Path(root)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    batches = sorted(root.glob("data_batch_*"))
    if not batches:
        raise ConfigError(f"no CIFAR-10 data_batch_* files in {root}")
    xs, ys = [], []
    for b in batches:
        try:
            with open(b, "rb") as f:
                d = pickle.load(f, encoding="bytes")  # noqa: S301 - the dataset's own format
            xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys += list(d[b"labels"])
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as err:
            raise ConfigError(f"CIFAR-10 file {b} is corrupt: {err}") from None
    names = [f"class{i}" for i in range(10)]
    meta = root / "batches.meta"
    if meta.is_file():
        with open(meta, "rb") as f:
            names = [n.decode() for n in pickle.load(f, encoding="bytes")[b"label_names"]]
    x = torch.from_numpy(np.concatenate(xs)).float() / 255.0
    return TensorDataset(resize_images(x, size) * 2 - 1, torch.tensor(ys), names)


def latent_dataset(path: str | Path) -> TensorDataset:
    """A cache written by ``python -m gaf_trt.training precompute``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"latent cache not found: {p}")
    try:
        d = torch.load(p, map_location="cpu", weights_only=True)
        latents, labels, names = d["latents"], d["labels"], list(d["class_names"])
    except (RuntimeError, EOFError, KeyError, TypeError, pickle.UnpicklingError) as err:
        raise ConfigError(f"latent cache {p} is unreadable or not a latent cache: {err}") from None
    return TensorDataset(latents, labels.long(), names)


def build_dataset(cfg: TrainConfig) -> TensorDataset:
    """The dataset of a config, checked against the config's shape and class count."""
    if cfg.data == "digits":
        ds = digits_dataset(cfg.image_size)
    elif cfg.data == "folder":
        if not cfg.data_path:
            raise ConfigError("data=folder needs --data PATH")
        ds = folder_dataset(cfg.data_path, cfg.image_size, cfg.latent_ch)
    elif cfg.data == "cifar10":
        if not cfg.data_path:
            raise ConfigError("data=cifar10 needs --data PATH (the cifar-10-batches-py folder)")
        ds = cifar10_dataset(cfg.data_path, cfg.image_size)
    else:
        if not cfg.data_path:
            raise ConfigError("data=latents needs --data PATH (a latent cache)")
        ds = latent_dataset(cfg.data_path)
    want = (cfg.latent_ch, cfg.input_size, cfg.input_size)
    if ds.sample_shape != want:
        raise ConfigError(f"data samples are {list(ds.sample_shape)} but the config expects "
                          f"{list(want)} (latent_ch, input size)")
    n_cls = len(ds.class_names)
    if n_cls > cfg.num_classes or int(ds.labels.max()) >= cfg.num_classes:
        raise ConfigError(f"the data has {n_cls} classes but the config has num_classes="
                          f"{cfg.num_classes}")
    return ds


class ShardedSampler:
    """Deterministic distributed sampler: each epoch is a seeded permutation split across
    ranks; ``indices(step)`` gives the micro-batches of one optimiser step."""

    def __init__(self, n: int, batch: int, *, seed: int, rank: int = 0, world: int = 1) -> None:
        if n < world:
            raise ConfigError(f"{n} samples cannot be split across {world} ranks")
        self.n, self.batch, self.seed, self.rank, self.world = n, batch, seed, rank, world
        self.per_rank = n // world
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _shard(self, epoch: int) -> Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.n, generator=g)[: self.per_rank * self.world]
            self._perm, self._epoch = perm[self.rank:: self.world], epoch
        return self._perm

    def indices(self, draw: int) -> Tensor:
        """Indices of the ``draw``-th batch of this rank (wraps around epochs)."""
        start = draw * self.batch
        out = []
        while len(out) < self.batch:
            epoch, offset = divmod(start + len(out), self.per_rank)
            shard = self._shard(epoch)
            take = min(self.batch - len(out), self.per_rank - offset)
            out += shard[offset: offset + take].tolist()
        return torch.tensor(out, dtype=torch.long)
