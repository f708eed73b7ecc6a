"""Distributed DP next to central DP: the same model, clip and noise, noised by the owners or by the model owner.

fl up --owners 5 --dataset digits && fl run examples/distributed_dp.py --noise-multiplier 0.5
"""

import json

import tensorflow as tf
from experiment_args import connect, parser

import fl

arguments = parser(__doc__.splitlines()[0], rounds=10)
arguments.add_argument("--noise-multiplier", type=float, default=0.5, help="the noise's scale over the clip")
arguments.add_argument("--clip-norm", type=float, default=1.0, help="the L2 norm each owner's update is clipped to")
args = arguments.parse_args()
cluster, aggregation = connect(args, dataset="digits")
train, test = fl.owner_sources(cluster)

results = {}
for central in (False, True):
    privacy = fl.DifferentialPrivacy(args.noise_multiplier, args.clip_norm, central=central)
    tf.keras.utils.set_random_seed(args.seed)
    with fl.FederatedLearning(cluster.model_owner, aggregation, privacy=privacy, seed=args.seed):
        model = tf.keras.Sequential(
            [
                tf.keras.layers.Flatten(input_shape=(8, 8, 1)),
                tf.keras.layers.Dense(64, activation="relu"),
                tf.keras.layers.Dense(10, activation="softmax"),
            ]
        )
        model.compile(optimizer=tf.keras.optimizers.SGD(0.3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(train, epochs=args.rounds, verbose=2)  # its logs carry epsilon, not the owners' metrics
    _, accuracy = model.evaluate(test, verbose=0)
    results[privacy.name] = {"test_accuracy": accuracy, "epsilon": history.history["epsilon"][-1]}
    print(f"{privacy.name}: test accuracy {accuracy:.4f}, epsilon {results[privacy.name]['epsilon']:.4g} at delta 1e-05")

(fl.results_dir() / "distributed_dp.json").write_text(json.dumps({"aggregation": args.aggregation, **results}))
