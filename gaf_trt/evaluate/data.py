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


@dataclass
class Images:
    """uint8 ``[N, H, W, 3]`` images and, when known, their labels ``[N]``."""

    images: np.ndarray
    labels: np.ndarray | None
    source: str

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


def _npz_images(arrays: dict[str, np.ndarray], path: Path) -> Images | None:
    key = next((k for k in ("arr_0", "images") if k in arrays and arrays[k].ndim >= 3), None)
    if key is None:
        return None
    labels = next((arrays[k] for k in ("labels", "arr_1") if k in arrays
                   and arrays[k].ndim == 1 and len(arrays[k]) == len(arrays[key])), None)
    return Images(_as_rgb_uint8(arrays[key], str(path)), labels, str(path))


def _folder_images(folder: Path) -> Images:
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
    labels = None
    txt = folder / "labels.txt"
    if txt.is_file():
        labels = _read_labels_txt(txt, len(pics))
    return Images(np.stack(pics), labels, str(folder))


def _read_labels_txt(txt: Path, n: int) -> np.ndarray | None:
    """The ``[n]`` integer labels of a folder's ``labels.txt`` (one per image, in file order);
    ``None`` when it holds another number of values. A value that is not a plain ASCII
    integer (``--3``, ``³``, ``3.5``) is refused, naming it and its line."""
    try:
        lines = txt.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ConfigError(f"{txt} is not UTF-8 text ({err.reason})") from None
    values = [(k + 1, v) for k, line in enumerate(lines) for v in line.split()]
    if len(values) != n:
        return None
    out = []
    for line, v in values:
        label = int_text(f"{txt} line {line}: label", v)
        if label is None:
            shown = v if len(v) <= 40 else f"{v[:40]}..."
            raise ConfigError(f"{txt} line {line}: label {shown!r} is not an integer "
                              "(labels are class ids 0, 1, 2, ...)")
        out.append(label)
    return np.array(out, dtype=np.int64)


def load_images(path: str | Path, what: str = "dataset") -> Images:
    """Images of a generated dataset folder (its ``samples.npz``, else its PNGs), a folder of
    images, or an ``.npz`` (``arr_0`` / ``images``; labels ``labels`` / ``arr_1``)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{what} not found: {p}")
    if p.is_dir():
        if (p / "samples.npz").is_file():
            return load_images(p / "samples.npz", what)
        return _folder_images(p)
    if p.suffix.lower() != ".npz":
        raise ConfigError(f"{what} {p}: give a folder of images or an .npz")
    images = _npz_images(_read_npz(p), p)
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
            mu, sigma = arrays["mu"].astype(np.float64), arrays["sigma"].astype(np.float64)
            if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
                raise ConfigError(f"{p}: mu {list(mu.shape)} and sigma {list(sigma.shape)} "
                                  "are not a mean and its covariance")
            stats = Stats(mu, sigma)
        images = _npz_images(arrays, p)
        if images is None and stats is None:
            raise ConfigError(f"reference {p} holds neither images (arr_0) nor mu/sigma")
        return Reference(images, stats, str(p))
    return Reference(load_images(p, "reference"), None, str(p))


def check_same_size(generated: Images, reference: Reference) -> None:
    """Both sides at one resolution (the metrics compare like with like)."""
    if reference.images is not None and reference.images.size != generated.size:
        (h, w), (rh, rw) = generated.size, reference.images.size
        raise ConfigError(f"the reference {reference.source} is {rh}x{rw} but the dataset "
                          f"{generated.source} is {h}x{w}; give a reference of the same "
                          "resolution")
