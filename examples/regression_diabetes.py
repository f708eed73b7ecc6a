"""A regression: scikit-learn's diabetes data (float targets, MSE), R² on the model owner against central training.

fl up --dataset diabetes && fl run examples/regression_diabetes.py
"""

import json

import numpy as np
import tensorflow as tf
from experiment_args import connect, parser

import fl
from fl.data import datasets

arguments = parser(__doc__.splitlines()[0], rounds=100)
arguments.add_argument("--learning-rate", type=float, default=0.01)
args = arguments.parse_args()
cluster, aggregation = connect(args, dataset="diabetes")
train, test = fl.owner_sources(cluster)


def regressor() -> tf.keras.Model:
    tf.keras.utils.set_random_seed(args.seed)
    model = tf.keras.Sequential([tf.keras.layers.Dense(16, activation="relu", input_shape=(10,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer=tf.keras.optimizers.SGD(args.learning_rate), loss="mse", metrics=["mae"])
    return model


@tf.function
def target_variance() -> tf.Tensor:
    """On the model owner: the test targets' variance (one number leaves it), for R²."""
    total, squares, count = 0.0, 0.0, 0.0
    for _, labels in test.dataset(256):
        total += tf.reduce_sum(labels)
        squares += tf.reduce_sum(tf.square(labels))
        count += tf.cast(tf.size(labels), tf.float32)
    return squares / count - tf.square(total / count)


with fl.FederatedLearning(cluster.model_owner, aggregation, seed=args.seed):
    model = regressor()
model.fit(train, epochs=args.rounds, verbose=2)
federated_mse, _ = model.evaluate(test)
with tf.device(cluster.model_owner.device_name):
    variance = float(target_variance())
federated_r2 = 1 - federated_mse / variance

# SIMULATION ONLY: the same model trained centrally on the same (public) training set, for comparison
public = datasets.load("diabetes", seed=cluster.dataset.seed)
central = regressor()
central.fit(public.x_train, public.y_train, epochs=args.rounds, batch_size=32, verbose=0)
central_mse = float(central.evaluate(public.x_test, public.y_test, verbose=0)[0])
central_r2 = 1 - central_mse / float(np.var(public.y_test))
print(f"regression_diabetes ({args.aggregation}): R² federated {federated_r2:.4f}, central {central_r2:.4f}")
result = {"aggregation": args.aggregation, "federated_r2": federated_r2, "central_r2": central_r2}
(fl.results_dir() / "regression_diabetes.json").write_text(json.dumps(result))
