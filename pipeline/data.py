"""Data sets: loading from Keras' cache or local files, one preprocessing, splits, tf.data.

Real sets (`mnist`, `fashion_mnist`, `cifar10`) come from a local source when
`data_dir` is given (an `.npz` with the keys x_train, y_train, x_test, y_test,
or a folder of the original IDX `.gz` files), otherwise from Keras' dataset
cache, which downloads when online. `digits` is scikit-learn's bundled 8x8
handwritten digits: real data that needs no download.

Preprocessing lives here only (`Preprocessing`), and is written next to every
trained model so exporters and board runners reproduce it exactly.
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import os
import struct
import zipfile
from pathlib import Path

import numpy as np

from pipeline.errors import UsageError, choice_error

log = logging.getLogger(__name__)

KERAS_CACHE = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """Raw pixels to model input: x = raw * scale, reshaped to `input_shape` (NHWC, float32)."""

    input_shape: tuple[int, ...]
    scale: float
    raw_dtype: str = "uint8"
    value_range: tuple[float, float] = (0.0, 1.0)

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        x = np.asarray(raw, dtype=np.float32) * np.float32(self.scale)
        return x.reshape((-1, *self.input_shape))

    def to_dict(self) -> dict:
        return {
            "formula": "x = float32(raw) * scale, reshaped to input_shape (NHWC)",
            "input_shape": list(self.input_shape),
            "scale": self.scale,
            "raw_dtype": self.raw_dtype,
            "value_range": list(self.value_range),
            "layout": "NHWC",
        }

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(
            input_shape=tuple(d["input_shape"]),
            scale=float(d["scale"]),
            raw_dtype=d.get("raw_dtype", "uint8"),
            value_range=tuple(d.get("value_range", (0.0, 1.0))),
        )


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    scale: float
    default_model: str
    # File names a local folder may hold, most specific first.
    npz_names: tuple[str, ...] = ()
    has_idx: bool = False
    class_names: tuple[str, ...] = tuple(str(i) for i in range(10))

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing(self.image_shape, self.scale)

    @property
    def mnist_like(self) -> bool:
        return self.image_shape[-1] == 1


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec("mnist", (28, 28, 1), 10, 1 / 255, "mlp", ("mnist.npz",), True),
    "fashion_mnist": DatasetSpec(
        "fashion_mnist",
        (28, 28, 1),
        10,
        1 / 255,
        "mlp",
        ("fashion_mnist.npz", "fashion-mnist.npz"),
        True,
        (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    ),
    "cifar10": DatasetSpec(
        "cifar10",
        (32, 32, 3),
        10,
        1 / 255,
        "cnn",
        ("cifar10.npz", "cifar-10.npz"),
        False,
        (
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ),
    ),
    # scikit-learn's digits hold pixel values 0..16.
    "digits": DatasetSpec("digits", (8, 8, 1), 10, 1 / 16, "mlp"),
}


@dataclasses.dataclass(frozen=True)
class Splits:
    """Preprocessed float32 arrays; validation is held out of the training data."""

    spec: DatasetSpec
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    @property
    def preprocessing(self) -> Preprocessing:
        return self.spec.preprocessing

    def replace(self, **changes) -> Splits:
        return dataclasses.replace(self, **changes)

    def summary(self) -> dict:
        return {
            "dataset": self.spec.name,
            "source": self.source,
            "train": len(self.x_train),
            "validation": len(self.x_val),
            "test": len(self.x_test),
        }


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise choice_error("data set", name, list(DATASETS))
    return DATASETS[name]


def load_raw(name: str, data_dir: str | os.PathLike | None = None) -> tuple[dict, str]:
    """Raw arrays {x_train, y_train, x_test, y_test} and a description of their source."""
    spec = get_spec(name)
    if name == "digits":
        return _load_digits(), "scikit-learn bundled digits"
    if data_dir is not None:
        return _load_local(spec, Path(data_dir))
    if name == "fashion_mnist" and DEBIAN_FASHION_MNIST.is_dir():
        return _load_idx_folder(DEBIAN_FASHION_MNIST), str(DEBIAN_FASHION_MNIST)
    return _load_keras(spec)


def load(
    name: str,
    data_dir: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    train_samples: int | None = None,
) -> Splits:
    """Loads, checks and preprocesses a data set and holds a validation split out of training."""
    spec = get_spec(name)
    raw, source = load_raw(name, data_dir)
    _check_arrays(spec, raw, source)
    prep = spec.preprocessing
    x_train, y_train = prep(raw["x_train"]), raw["y_train"].reshape(-1).astype(np.int64)
    x_test, y_test = prep(raw["x_test"]), raw["y_test"].reshape(-1).astype(np.int64)

    # A seeded permutation, so the validation split is the same on every resume.
    order = np.random.default_rng(seed).permutation(len(x_train))
    n_val = max(1, int(round(val_fraction * len(x_train))))
    val, train = order[:n_val], order[n_val:]
    if train_samples is not None:
        train = train[:train_samples]
    return Splits(
        spec, x_train[train], y_train[train], x_train[val], y_train[val], x_test, y_test, source
    )


def make_dataset(x, y, batch_size: int, shuffle: bool = False, seed: int = 0):
    """A batched, prefetched tf.data pipeline over preprocessed arrays."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


# --- sources ---------------------------------------------------------------


def _load_digits() -> dict:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.astype(np.uint8)  # (1797, 8, 8), values 0..16
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.2, random_state=0, stratify=digits.target
    )
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def _load_local(spec: DatasetSpec, path: Path) -> tuple[dict, str]:
    if not path.exists():
        raise UsageError(f"DATA_DIR {path} does not exist; point it at an .npz file or a folder")
    if path.is_file():
        return _load_npz(path), str(path)
    if not os.access(path, os.R_OK | os.X_OK):
        raise UsageError(f"DATA_DIR {path} is not readable; check its permissions")
    for name in spec.npz_names:
        if (path / name).is_file():
            return _load_npz(path / name), str(path / name)
    if spec.has_idx and all((path / f).is_file() for f in IDX_FILES.values()):
        return _load_idx_folder(path), str(path)
    # A single file named after the data set, such as mnist-t10k.npz.
    stem = spec.name.split("_")[0]
    candidates = sorted(path.glob(f"{stem}*.npz"))
    if len(candidates) == 1:
        return _load_npz(candidates[0]), str(candidates[0])
    wanted = " or ".join(spec.npz_names)
    if spec.has_idx:
        wanted += " or the four IDX files " + ", ".join(IDX_FILES.values())
    raise UsageError(f"no {spec.name} data in {path}: place {wanted} there")


def _load_npz(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz.files]
            if missing:
                raise UsageError(
                    f"{path} lacks the keys {', '.join(missing)}; an .npz needs "
                    f"{', '.join(NPZ_KEYS)}"
                )
            return {k: npz[k] for k in NPZ_KEYS}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise UsageError(f"{path} is corrupt or not an .npz file ({exc}); replace it") from None


def read_idx(path: Path) -> np.ndarray:
    """Reads one IDX file (optionally gzipped) of unsigned bytes, as MNIST ships them."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zero, dtype, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype != 0x08 or not 1 <= ndim <= 4:
            raise ValueError("bad magic number")
        shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
        body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
        if body.size != int(np.prod(shape)):
            raise ValueError(f"expected {int(np.prod(shape))} values, found {body.size}")
        return body.reshape(shape)
    except (OSError, EOFError, ValueError, struct.error) as exc:
        raise UsageError(f"{path} is corrupt or not an IDX file ({exc}); replace it") from None


def _load_idx_folder(path: Path) -> dict:
    return {key: read_idx(path / name) for key, name in IDX_FILES.items()}


def _keras_cache_hint(spec: DatasetSpec) -> str:
    if spec.name == "cifar10":
        return f"the folder cifar-10-batches-py at {KERAS_CACHE / 'cifar-10-batches-py'}"
    if spec.name == "fashion_mnist":
        return f"the four IDX .gz files in {KERAS_CACHE / 'fashion-mnist'}"
    return f"{spec.npz_names[0]} at {KERAS_CACHE / spec.npz_names[0]}"


def _load_keras(spec: DatasetSpec) -> tuple[dict, str]:
    import tensorflow as tf

    loaders = {
        "mnist": tf.keras.datasets.mnist,
        "fashion_mnist": tf.keras.datasets.fashion_mnist,
        "cifar10": tf.keras.datasets.cifar10,
    }
    try:
        (x_train, y_train), (x_test, y_test) = loaders[spec.name].load_data()
    except Exception as exc:  # Keras raises plain Exception for failed downloads
        raise UsageError(
            f"could not load {spec.name} from Keras' cache or download it ({type(exc).__name__}); "
            f"offline, place {_keras_cache_hint(spec)}, or pass DATA_DIR=<.npz file or folder>"
        ) from None
    raw = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    return raw, f"keras cache {KERAS_CACHE}"


def _check_arrays(spec: DatasetSpec, raw: dict, source: str) -> None:
    h, w, c = spec.image_shape
    for split in ("train", "test"):
        x, y = raw[f"x_{split}"], raw[f"y_{split}"]
        shape_ok = x.shape[1:] in ((h, w), (h, w, c)) if c == 1 else x.shape[1:] == (h, w, c)
        if x.ndim < 3 or not shape_ok:
            raise UsageError(
                f"{source}: x_{split} has shape {x.shape}, expected (N, {h}, {w}"
                f"{'' if c == 1 else f', {c}'}) for {spec.name}; is it the right data set?"
            )
        if len(y.reshape(-1)) != len(x):
            raise UsageError(
                f"{source}: {len(x)} images but {len(y.reshape(-1))} labels in {split}"
            )
        if len(y) and (y.min() < 0 or y.max() >= spec.num_classes):
            raise UsageError(
                f"{source}: labels in y_{split} outside 0..{spec.num_classes - 1}; "
                f"is it the right data set?"
            )
