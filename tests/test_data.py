import gzip
import struct

import numpy as np
import pytest

from pipeline import data
from pipeline.errors import UsageError


def _mnist_like(n_train=30, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def _write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def test_npz_file_in_keras_format_loads_and_scales_to_unit_range(tmp_path):
    raw = _mnist_like()
    np.savez(tmp_path / "mnist.npz", **raw)
    splits = data.load("mnist", tmp_path / "mnist.npz", val_fraction=0.2)
    assert splits.x_train.shape[1:] == (28, 28, 1) and splits.x_train.dtype == np.float32
    assert len(splits.x_train) + len(splits.x_val) == 30 and len(splits.x_test) == 10
    assert 0.0 <= splits.x_test.min() and splits.x_test.max() <= 1.0
    np.testing.assert_allclose(splits.x_test[..., 0], raw["x_test"] / 255.0, rtol=1e-6)


def test_folder_of_idx_gz_files_loads_like_the_original_mnist(tmp_path):
    raw = _mnist_like()
    for key, name in data.IDX_FILES.items():
        _write_idx(tmp_path / name, raw[key])
    splits = data.load("fashion_mnist", tmp_path)
    assert splits.source == str(tmp_path)
    np.testing.assert_array_equal(splits.y_test, raw["y_test"])


def test_validation_split_is_disjoint_from_training_and_reproducible(tmp_path):
    raw = _mnist_like(n_train=50)
    raw["x_train"] = np.arange(50, dtype=np.uint8)[:, None, None] * np.ones((1, 28, 28), np.uint8)
    np.savez(tmp_path / "mnist.npz", **raw)
    a = data.load("mnist", tmp_path, val_fraction=0.2, seed=1)
    b = data.load("mnist", tmp_path, val_fraction=0.2, seed=1)
    ids = lambda x: set(np.round(x[:, 0, 0, 0] * 255).astype(int))  # noqa: E731
    assert not ids(a.x_train) & ids(a.x_val)
    assert len(a.x_val) == 10
    np.testing.assert_array_equal(a.x_val, b.x_val)


def test_digits_is_bundled_real_data_with_a_held_out_test_set():
    splits = data.load("digits")
    assert splits.x_train.shape[1:] == (8, 8, 1)
    assert len(splits.x_train) + len(splits.x_val) + len(splits.x_test) == 1797
    assert splits.x_train.max() == 1.0


def test_preprocessing_round_trips_through_its_dict():
    prep = data.get_spec("cifar10").preprocessing
    again = data.Preprocessing.from_dict(prep.to_dict())
    raw = np.full((2, 32, 32, 3), 255, np.uint8)
    np.testing.assert_array_equal(prep(raw), again(raw))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a zip file", "corrupt"),
        (None, "lacks the keys"),
    ],
)
def test_corrupt_or_incomplete_npz_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "mnist.npz"
    if content is None:
        np.savez(path, x_train=np.zeros((1, 28, 28)))
    else:
        path.write_bytes(content)
    with pytest.raises(UsageError, match=message):
        data.load("mnist", path)


def test_truncated_idx_file_is_a_clear_error(tmp_path):
    raw = _mnist_like()
    for key, name in data.IDX_FILES.items():
        _write_idx(tmp_path / name, raw[key])
    with gzip.open(tmp_path / data.IDX_FILES["x_test"], "wb") as f:
        f.write(struct.pack(">HBB", 0, 8, 3) + struct.pack(">3I", 10, 28, 28) + b"\0" * 100)
    with pytest.raises(UsageError, match="corrupt or not an IDX"):
        data.load("mnist", tmp_path)


def test_images_of_the_wrong_shape_are_refused(tmp_path):
    raw = _mnist_like()
    np.savez(tmp_path / "cifar10.npz", **raw)
    with pytest.raises(UsageError, match="expected"):
        data.load("cifar10", tmp_path)


def test_folder_without_the_data_says_which_files_to_place(tmp_path):
    with pytest.raises(UsageError, match="train-images-idx3-ubyte.gz"):
        data.load("mnist", tmp_path)


def test_offline_without_cache_says_where_to_place_the_file(monkeypatch):
    import tensorflow as tf

    def offline():
        raise Exception("URL fetch failure")

    monkeypatch.setattr(tf.keras.datasets.cifar10, "load_data", offline)
    with pytest.raises(UsageError, match="cifar-10-batches-py"):
        data.load("cifar10")


def test_unknown_data_set_lists_the_choices():
    with pytest.raises(UsageError, match="mnist, fashion_mnist, cifar10, digits"):
        data.load("imagenet")
