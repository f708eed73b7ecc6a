"""Data set loaders, normalised to float32 features of their own shape and int64 (or float32) labels.

`digits` (8x8x1 images) and `diabetes` (a regression: 10 features, a standardised
float target) ship inside scikit-learn and work offline; `mnist` downloads through
Keras (needs the network); `npz:PATH` reads a local file with arrays
x_train, y_train, x_test, y_test (e.g. a saved copy of MNIST), images as stored.
Float labels make a regression; integer labels a classification.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fl.errors import FLError

OFFLINE = ("digits", "diabetes")


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def is_regression(self) -> bool:
        return self.y_train.dtype.kind == "f"

    @property
    def label_dtype(self) -> str:
        return "float32" if self.is_regression else "int64"

    @property
    def num_classes(self) -> int:
        """0 for a regression."""
        return 0 if self.is_regression else int(max(self.y_train.max(), self.y_test.max())) + 1


def load(name: str, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    if name == "digits":
        return _digits(seed, test_fraction)
    if name == "diabetes":
        return _diabetes(seed, test_fraction)
    if name == "mnist":
        return _mnist()
    if name.startswith("npz:"):
        return load_npz(Path(name[4:]))
    raise FLError(f"unknown dataset {name!r}; use digits, diabetes, mnist or npz:PATH")


def _digits(seed: int, test_fraction: float) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = x.reshape(-1, 8, 8, 1)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return _normalised("digits", x_train, y_train, x_test, y_test, scale=16.0)


def _diabetes(seed: int, test_fraction: float) -> Dataset:
    """Features and target standardised by the training split's statistics (R² does not change)."""
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split

    x, y = load_diabetes(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=test_fraction, random_state=seed)
    x_mean, x_std = x_train.mean(axis=0), x_train.std(axis=0)
    y_mean, y_std = y_train.mean(), y_train.std()
    return Dataset(
        "diabetes",
        ((x_train - x_mean) / x_std).astype(np.float32),
        ((y_train - y_mean) / y_std).astype(np.float32),
        ((x_test - x_mean) / x_std).astype(np.float32),
        ((y_test - y_mean) / y_std).astype(np.float32),
    )


def _mnist() -> Dataset:
    import tensorflow as tf

    try:
        (x_train, y_train), (x_test, y_test) = tf.keras.datasets.mnist.load_data()
    except Exception as error:
        raise FLError(
            f"could not download MNIST ({type(error).__name__}); without network access save it as an .npz "
            "and use --dataset npz:PATH"
        ) from None
    return _normalised("mnist", x_train, y_train, x_test, y_test, scale=255.0)


def load_npz(path: Path) -> Dataset:
    if not path.exists():
        raise FLError(f"dataset file {path} not found; pass an existing .npz with x_train, y_train, x_test, y_test")
    with np.load(path) as arrays:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(arrays.files)
        if missing:
            raise FLError(f"{path} lacks arrays {', '.join(sorted(missing))}; save them with np.savez")
        x_train, y_train, x_test, y_test = (arrays[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    scale = 255.0 if x_train.dtype == np.uint8 else 1.0
    return _normalised(path.stem, x_train, y_train, x_test, y_test, scale=scale)


def _normalised(name, x_train, y_train, x_test, y_test, scale: float) -> Dataset:
    """Features scaled to float32 in their own shape (images as HxW get a channel: HxWx1); labels int64 or float32."""

    def features(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32) / np.float32(scale)
        return x[..., np.newaxis] if x.ndim == 3 else x

    def labels(y: np.ndarray) -> np.ndarray:
        y = np.asarray(y)
        return y.astype(np.float32) if y.dtype.kind == "f" else y.astype(np.int64)

    return Dataset(name, features(x_train), labels(y_train), features(x_test), labels(y_test))
