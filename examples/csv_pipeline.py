"""Each owner's own CSV file, parsed with graph ops on that owner: a pipeline function per owner (tfe issue #670).

python examples/make_owner_files.py /tmp/owners && fl up --data /tmp/owners && fl run examples/csv_pipeline.py
"""

import json

import tensorflow as tf
from experiment_args import connect, parser

import fl

FEATURES = 30
args = parser(__doc__.splitlines()[0], rounds=20).parse_args()
cluster, aggregation = connect(args)


def records(owner: fl.Player, seed: tf.Tensor) -> tf.data.Dataset:
    """Runs on the driver but builds only graph ops: the file is opened and parsed on `owner`."""
    lines = tf.data.TextLineDataset(f"{owner.own_data_dir}/records.csv").skip(1)
    columns = [tf.constant(0.0)] * FEATURES + [tf.constant(0, tf.int64)]

    def parse(line: tf.Tensor):
        fields = tf.io.decode_csv(line, record_defaults=columns)
        return tf.stack(fields[:FEATURES]), fields[FEATURES]

    return fl.shuffled(lines.map(parse), seed).batch(32)  # differently each round


tf.keras.utils.set_random_seed(args.seed)
with fl.FederatedLearning(cluster.model_owner, aggregation, seed=args.seed):
    model = tf.keras.Sequential(
        [tf.keras.layers.Dense(16, activation="relu", input_shape=(FEATURES,)), tf.keras.layers.Dense(2, activation="softmax")]
    )
    model.compile(optimizer=tf.keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy", metrics=["accuracy"])

model.fit({owner: records for owner in cluster.data_owners}, epochs=args.rounds, verbose=2)
loss, accuracy = model.evaluate(fl.OwnerPipeline(cluster.model_owner, records))
print(f"csv_pipeline ({args.aggregation}): test accuracy {accuracy:.4f} after {args.rounds} rounds")
(fl.results_dir() / "csv_pipeline.json").write_text(json.dumps({"aggregation": args.aggregation, "test_accuracy": accuracy}))
