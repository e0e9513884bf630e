"""Read the two sides of an evaluation: a generated dataset (a ``gaf-trt generate`` folder, a
folder of images, an ``.npz`` of images) and a reference (the same kinds, or precomputed
``mu`` / ``sigma`` statistics as ADM, torch-fidelity and clean-fid store them)."""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gaf_trt.checks import int_text
from gaf_trt.errors import ConfigError
from gaf_trt.io.images import open_image
from gaf_trt.metrics.features import Stats

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
MAX_IMAGE_PIXELS = 64_000_000
#: The largest class id a label may hold.
MAX_LABEL = 2**31 - 1


@dataclass
class Images:
    """uint8 ``[N, H, W, 3]`` images and, when known, their labels ``[N]``."""

    images: np.ndarray
    labels: np.ndarray | None
    source: str
    note: str = ""  # what was left out (an incomplete dataset read with --allow-incomplete)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])


@dataclass
class Reference:
    """Reference images, precomputed pool statistics, or both."""

    images: Images | None
    stats: Stats | None
    source: str


def _as_rgb_uint8(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3) or arr.shape[0] < 1:
        raise ConfigError(f"{where}: expected images [N, H, W, 3] (or 1 channel), got "
                          f"{list(arr.shape)}")
    if arr.dtype != np.uint8:
        raise ConfigError(f"{where}: expected uint8 images, got {arr.dtype}")
    return np.repeat(arr, 3, axis=-1) if arr.shape[-1] == 1 else arr


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` archive; a truncated archive, a ``.npy`` (or anything else)
    named ``.npz`` and a damaged member are refused in one line naming the file."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ConfigError(f"{path} is a single .npy array, not an .npz archive (save it "
                              "with numpy.savez)")
        with loaded as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        reason = str(err).splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{path} is not a readable .npz ({reason})") from None


def check_labels(labels: np.ndarray, n: int, where: str) -> np.ndarray:
    """Labels ``[n]`` as int64: integers (an integer dtype, or finite whole floats), one per
    image, none negative; else a ConfigError naming the first bad one."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != n:
        raise ConfigError(f"{where}: expected one label per image ({n}), got labels of shape "
                          f"{list(labels.shape)}")
    if labels.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(labels) | (labels != np.round(labels)))
        if bad.size:
            raise ConfigError(f"{where}: labels must be integers; label {bad[0]} is "
                              f"{float(labels[bad[0]])}")
    elif labels.dtype.kind not in "iu":
        raise ConfigError(f"{where}: labels must be integers, got dtype {labels.dtype}")
    for k in (int(np.argmin(labels)), int(np.argmax(labels))) if labels.size else ():
        if not 0 <= labels[k] <= MAX_LABEL:
            raise ConfigError(f"{where}: labels must be class ids in 0..{MAX_LABEL}; label {k} "
                              f"is {labels[k]}")
    return labels.astype(np.int64)


def _npz_images(arrays: dict[str, np.ndarray], path: Path, with_labels: bool = True
                ) -> Images | None:
    key = next((k for k in ("arr_0", "images") if k in arrays and arrays[k].ndim >= 3), None)
    if key is None:
        return None
    images = _as_rgb_uint8(arrays[key], str(path))
    if not with_labels:
        return Images(images, None, str(path))
    labels = arrays.get("labels")
    other = arrays.get("arr_1")
    if labels is None and other is not None and other.ndim == 1 and len(other) == len(images):
        labels = other  # arr_1 only when it fits (it may be anything else)
    if labels is not None:
        labels = check_labels(labels, len(images), f"{path} labels")
    return Images(images, labels, str(path))


def _labels_txt(txt: Path, n: int) -> np.ndarray:
    """``labels.txt``: one integer class id per image, in file order (checked by
    :func:`check_labels`). A value that is not a plain ASCII integer (``--3``, ``³``, ``3.5``)
    is refused, naming it and its line."""
    try:
        lines = txt.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ConfigError(f"{txt} is not UTF-8 text ({err.reason})") from None
    except OSError as err:
        raise ConfigError(f"cannot read {txt}: {err}") from None
    out = []
    for line, v in ((k + 1, v) for k, text in enumerate(lines) for v in text.split()):
        label = int_text(f"{txt} line {line}: label", v)
        if label is None:
            shown = v if len(v) <= 40 else f"{v[:40]}..."
            raise ConfigError(f"{txt} line {line}: label {shown!r} is not an integer "
                              "(labels are class ids 0, 1, 2, ...)")
        out.append(label)
    return check_labels(np.array(out, dtype=np.int64), n, str(txt))


def _folder_images(folder: Path, with_labels: bool = True) -> Images:
    from PIL import Image

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                   and p.is_file())
    if not files:
        raise ConfigError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {folder}")
    pics = []
    for p in files:
        try:
            with open_image(p) as im:  # no Pillow warning; the size is checked before decoding
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    raise ConfigError(f"image {p} is {im.width}x{im.height} pixels; at most "
                                      f"{MAX_IMAGE_PIXELS:,} pixels are read")
                pics.append(np.asarray(im.convert("RGB")))
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise ConfigError(f"cannot read image {p}: {err}") from None
    if len({a.shape for a in pics}) > 1:
        raise ConfigError(f"the images in {folder} have different sizes "
                          f"({sorted({a.shape[:2] for a in pics})[:3]}...)")
    txt = folder / "labels.txt"
    labels = _labels_txt(txt, len(pics)) if with_labels and txt.is_file() else None
    return Images(np.stack(pics), labels, str(folder))


def load_images(path: str | Path, what: str = "dataset", *,
                allow_incomplete: bool = False, with_labels: bool = True) -> Images:
    """Images of a generated dataset folder (its verified shards: :mod:`.dataset`), a folder
    of images, or an ``.npz`` (``arr_0`` / ``images``; labels ``labels`` / ``arr_1``, checked
    by :func:`check_labels`; not read without ``with_labels``)."""
    from gaf_trt.evaluate.dataset import is_generated, load_generated

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{what} not found: {p}")
    if p.is_dir():
        if is_generated(p):
            images, labels, note = load_generated(p, allow_incomplete)
            return Images(images, labels, str(p), note)
        return _folder_images(p, with_labels)
    if p.suffix.lower() != ".npz":
        raise ConfigError(f"{what} {p}: give a folder of images or an .npz")
    images = _npz_images(_read_npz(p), p, with_labels)
    if images is None:
        raise ConfigError(f"{what} {p} holds no images (arr_0 / images)")
    return images


def load_reference(path: str | Path) -> Reference:
    """A reference: images, or an ``.npz`` with images and/or ``mu`` / ``sigma``."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".npz":
        arrays = _read_npz(p)
        stats = None
        if "mu" in arrays and "sigma" in arrays:
            stats = check_stats(arrays["mu"], arrays["sigma"], str(p))
        images = _npz_images(arrays, p, with_labels=False)
        if images is None and stats is None:
            raise ConfigError(f"reference {p} holds neither images (arr_0) nor mu/sigma")
        return Reference(images, stats, str(p))
    return Reference(load_images(p, "reference", with_labels=False), None, str(p))


#: Relative tolerance of the symmetry and positive-semidefiniteness checks of a sigma.
STATS_RTOL = 1e-6


def check_stats(mu: np.ndarray, sigma: np.ndarray, where: str) -> Stats:
    """Reference statistics ``mu [D]``, ``sigma [D, D]`` as float64 :class:`Stats`: finite, and
    sigma symmetric and positive semi-definite (a covariance); else a ConfigError."""
    try:
        mu, sigma = np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: mu and sigma must be numeric arrays") from None
    if mu.ndim != 1 or mu.shape[0] < 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ConfigError(f"{where}: mu {list(mu.shape)} and sigma {list(sigma.shape)} are not "
                          "a mean [D] and its covariance [D, D]")
    for name, arr in (("mu", mu), ("sigma", sigma)):
        if not np.isfinite(arr).all():
            raise ConfigError(f"{where}: {name} holds NaN or infinite values")
    scale = max(float(np.abs(sigma).max()), np.finfo(np.float64).tiny)
    if np.abs(sigma - sigma.T).max() > STATS_RTOL * scale:
        raise ConfigError(f"{where}: sigma is not symmetric (not a covariance)")
    low = float(np.linalg.eigvalsh(sigma).min())
    if low < -STATS_RTOL * scale * sigma.shape[0]:
        raise ConfigError(f"{where}: sigma is not positive semi-definite (smallest eigenvalue "
                          f"{low:.4g}; not a covariance)")
    return Stats(mu, (sigma + sigma.T) / 2)


def check_same_size(generated: Images, reference: Reference) -> None:
    """Both sides at one resolution (the metrics compare like with like)."""
    if reference.images is not None and reference.images.size != generated.size:
        (h, w), (rh, rw) = generated.size, reference.images.size
        raise ConfigError(f"the reference {reference.source} is {rh}x{rw} but the dataset "
                          f"{generated.source} is {h}x{w}; give a reference of the same "
                          "resolution")
