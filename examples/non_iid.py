"""Non-IID digits: FedAvg weighted against uniform, and server optimizers, next to central training, as a table.

fl up --owners 5 --partition dirichlet --alpha 0.3 --seed 1 && fl run examples/non_iid.py
"""

import json

import tensorflow as tf
from experiment_args import connect, parser

import fl
from fl.data import datasets

# (name, weighting, server optimizer): Reddi et al. 2021's server learning rates for adaptive optimizers
STRATEGIES = [
    ("FedAvg, uniform", "uniform", fl.ServerOptimizer("sgd", 1.0)),
    ("FedAvg, weighted", "examples", fl.ServerOptimizer("sgd", 1.0)),
    ("FedAvgM", "examples", fl.ServerOptimizer("momentum", 0.5, momentum=0.5)),
    ("FedAdam", "examples", fl.ServerOptimizer("adam", 0.01)),
    ("FedYogi", "examples", fl.ServerOptimizer("yogi", 0.01)),
]

arguments = parser(__doc__.splitlines()[0], rounds=30)
arguments.add_argument("--learning-rate", type=float, default=0.1, help="the owners' SGD learning rate")
args = arguments.parse_args()
cluster, aggregation = connect(args, dataset="digits")
train, test = fl.owner_sources(cluster)
split = cluster.dataset
print(f"digits split {split.partition} (alpha {split.alpha:g}, seed {split.seed}): {split.train_examples}")


def classifier() -> tf.keras.Model:
    tf.keras.utils.set_random_seed(args.seed)
    model = tf.keras.Sequential(
        [
            tf.keras.layers.Flatten(input_shape=(8, 8, 1)),
            tf.keras.layers.Dense(64, activation="relu"),
            tf.keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=tf.keras.optimizers.SGD(args.learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    return model


# SIMULATION ONLY: the same model and optimizer trained centrally on the union of the owners' shards
public = datasets.load("digits", seed=split.seed)
central = classifier()
central.fit(public.x_train, public.y_train, epochs=args.rounds, batch_size=32, verbose=0)
results = {"central": float(central.evaluate(public.x_test, public.y_test, verbose=0)[1])}
for name, weighting, server in STRATEGIES:
    with fl.FederatedLearning(cluster.model_owner, aggregation, server=server, weighting=weighting, seed=args.seed):
        model = classifier()
    model.fit(train, epochs=args.rounds, verbose=0)
    results[name] = model.evaluate(test, verbose=0)[1]
    print(f"{name}: {results[name]:.4f}", flush=True)

print(f"\n| {args.aggregation}, {len(train)} owners, {args.rounds} rounds | test accuracy |\n|---|---|")
for name, accuracy in results.items():
    print(f"| {name} | {accuracy:.4f} |")
(fl.results_dir() / f"non_iid-{args.aggregation}.json").write_text(json.dumps(results, indent=2))
