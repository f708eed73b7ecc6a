"""Loaders and the simulation-only split helper."""

import numpy as np
import pytest
import tensorflow as tf

from fl.data import datasets, split_among_players
from fl.data.split import write_tfrecord
from fl.errors import FLError


def labelled(n: int = 1000, classes: int = 10):
    rng = np.random.default_rng(1)
    return rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, classes, size=n)


def test_iid_split_covers_every_example_once():
    x, y = labelled()
    parts = split_among_players(x, y, 3, "iid", seed=7)
    assert [len(py) for _, py in parts] == [334, 333, 333]
    joined = np.sort(np.concatenate([px[:, 0] for px, _ in parts]))
    np.testing.assert_array_equal(joined, np.sort(x[:, 0]))


def test_dirichlet_split_skews_labels_more_for_smaller_alpha():
    x, y = labelled(5000)

    def skew(alpha: float) -> float:
        parts = split_among_players(x, y, 5, "dirichlet", alpha=alpha, seed=3)
        histograms = np.array([np.bincount(py, minlength=10) / len(py) for _, py in parts])
        return float(np.abs(histograms - histograms.mean(axis=0)).sum())

    assert skew(0.1) > 3 * skew(100.0)
    parts = split_among_players(x, y, 5, "dirichlet", alpha=0.05, seed=3)
    assert sum(len(py) for _, py in parts) == 5000 and all(len(py) > 0 for _, py in parts)


def test_split_refuses_bad_arguments():
    x, y = labelled(10)
    with pytest.raises(FLError, match="unknown partition 'zipf'"):
        split_among_players(x, y, 2, "zipf")
    with pytest.raises(FLError, match="cannot split 10 examples among 11 players"):
        split_among_players(x, y, 11)
    with pytest.raises(FLError, match="alpha must be > 0"):
        split_among_players(x, y, 2, "dirichlet", alpha=0)


def test_digits_ship_offline_as_images_and_are_normalised():
    digits = datasets.load("digits")
    assert digits.feature_shape == (8, 8, 1) and digits.num_classes == 10
    assert len(digits.y_train) + len(digits.y_test) == 1797
    assert 0.0 <= digits.x_train.min() and digits.x_train.max() <= 1.0


def test_npz_loader_reads_a_local_mnist_shaped_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny-mnist.npz"
    images = rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8)
    np.savez(path, x_train=images[:15], y_train=np.arange(15) % 10, x_test=images[15:], y_test=np.arange(5))
    data = datasets.load(f"npz:{path}")
    assert data.feature_shape == (28, 28, 1) and data.x_train.dtype == np.float32
    np.testing.assert_allclose(data.x_test[0, :, :, 0], images[15] / 255.0, rtol=1e-6)


def test_npz_loader_names_missing_arrays(tmp_path):
    path = tmp_path / "partial.npz"
    np.savez(path, x_train=np.zeros((2, 2)), y_train=np.zeros(2))
    with pytest.raises(FLError, match="lacks arrays x_test, y_test"):
        datasets.load(f"npz:{path}")


def test_mnist_without_network_says_how_to_use_a_local_file(monkeypatch):
    def offline():
        raise OSError("network unreachable")

    monkeypatch.setattr(tf.keras.datasets.mnist, "load_data", offline)
    with pytest.raises(FLError, match="use --dataset npz:PATH"):
        datasets.load("mnist")


def test_tfrecord_shard_round_trips(tmp_path):
    from fl.cluster import Player
    from fl.data.sources import OwnerData

    x, y = labelled(50)
    write_tfrecord(tmp_path / "train.tfrecord", x, y)
    source = OwnerData(Player("local", "127.0.0.1:1", "data_owner", 0), str(tmp_path / "train.tfrecord"), (4,))
    features, labels = next(iter(source.dataset(batch_size=50)))
    np.testing.assert_allclose(features.numpy(), x)
    np.testing.assert_array_equal(labels.numpy(), y)
    shuffled = np.concatenate([b.numpy() for _, b in source.dataset(10, shuffle_seed=tf.constant(5, tf.int64))])
    assert sorted(shuffled) == sorted(y) and not np.array_equal(shuffled, y)
