"""The server optimizers against the update rules of Reddi et al. 2021, written out in numpy."""

import numpy as np
import pytest
import tensorflow as tf

from fl.errors import FLError
from fl.policies import ServerOptimizer
from fl.server_update import ServerUpdate

DEVICE = "/job:localhost/replica:0/task:0/device:CPU:0"
DELTAS = [np.array([0.5, -0.25, 0.0], np.float32), np.array([1.0, 2.0, -3.0], np.float32), np.array([0.1, 0.1, 0.1], np.float32)]


def reference(settings: ServerOptimizer, deltas) -> np.ndarray:
    weights, m, v = np.zeros(3), np.zeros(3), np.zeros(3)
    for delta in deltas:
        delta = delta.astype(np.float64)
        if settings.name == "sgd":
            weights += settings.learning_rate * delta
            continue
        if settings.name == "momentum":
            m = settings.momentum * m + delta
            weights += settings.learning_rate * m
            continue
        m = settings.beta_1 * m + (1 - settings.beta_1) * delta
        if settings.name == "adam":
            v = settings.beta_2 * v + (1 - settings.beta_2) * delta**2
        elif settings.name == "yogi":
            v = v - (1 - settings.beta_2) * delta**2 * np.sign(v - delta**2)
        else:
            v = v + delta**2
        weights += settings.learning_rate * m / (np.sqrt(v) + settings.epsilon)
    return weights


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "yogi", "adagrad"])
def test_each_optimizer_follows_its_update_rule(name):
    settings = ServerOptimizer(name, 0.5 if name in ("sgd", "momentum") else 0.1)
    weights = tf.Variable(tf.zeros([3]))
    update = ServerUpdate(settings, [weights], DEVICE)
    for delta in DELTAS:
        update.apply([tf.constant(delta)], tf.constant(True))
    np.testing.assert_allclose(weights.numpy(), reference(settings, DELTAS), rtol=1e-5, atol=1e-6)
    assert int(update.step.numpy()) == len(DELTAS)


def test_a_round_not_applied_changes_neither_the_weights_nor_the_moments():
    weights = tf.Variable(tf.ones([3]))
    update = ServerUpdate(ServerOptimizer("adam", 0.1), [weights], DEVICE)
    update.apply([tf.constant(DELTAS[0])], tf.constant(True))
    before = [variable.numpy().copy() for variable in [weights, *update.state]]
    _, _, applied = update.apply([tf.constant(DELTAS[1])], tf.constant(False))
    assert not bool(applied)
    for old, variable in zip(before, [weights, *update.state]):
        np.testing.assert_array_equal(old, variable.numpy())
    _, finite, applied = update.apply([tf.constant([np.inf, 0, 0], tf.float32)], tf.constant(True))
    assert not bool(finite) and not bool(applied)
    np.testing.assert_array_equal(before[0], weights.numpy())


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"name": "adamw"}, "server optimizer 'adamw': use one of sgd, momentum, adam, yogi, adagrad"),
        ({"learning_rate": 0}, "server learning rate 0: > 0, e.g. 1 for sgd or 0.01 for adam"),
        ({"beta_2": 1.0}, r"server beta_2 1: in \[0, 1\), e.g. 0.9"),
    ],
)
def test_bad_server_settings_are_refused_in_one_line(settings, message):
    with pytest.raises(FLError, match=f"^{message}$"):
        ServerOptimizer(**settings)
