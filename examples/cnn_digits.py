"""A CNN with BatchNorm and Dropout on digits as 8x8x1 images, each owner training on its own shard.

fl up --dataset digits && fl run examples/cnn_digits.py --aggregation pond
"""

import json

import tensorflow as tf
from experiment_args import connect, parser

import fl

args = parser(__doc__.splitlines()[0], rounds=40).parse_args()
cluster, aggregation = connect(args, dataset="digits")
train, test = fl.owner_sources(cluster)  # each owner's shard of 8x8x1 images, read on that owner
tf.keras.utils.set_random_seed(args.seed)

with fl.FederatedLearning(cluster.model_owner, aggregation, seed=args.seed):
    model = tf.keras.Sequential(
        [
            tf.keras.layers.Conv2D(16, 3, padding="same", activation="relu", input_shape=(8, 8, 1)),
            tf.keras.layers.BatchNormalization(),
            tf.keras.layers.Conv2D(32, 3, activation="relu"),
            tf.keras.layers.MaxPooling2D(),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dropout(0.2),
            tf.keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer=tf.keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy", metrics=["accuracy"])

history = model.fit(train, epochs=args.rounds, verbose=2)
loss, accuracy = model.evaluate(test)
print(f"cnn_digits ({args.aggregation}): test accuracy {accuracy:.4f} after {args.rounds} rounds")
(fl.results_dir() / "cnn_digits.json").write_text(json.dumps({"aggregation": args.aggregation, "test_accuracy": accuracy}))
