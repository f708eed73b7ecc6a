"""Owner pipelines traced on the driver before round 0 (no cluster: a scratch graph places ops, runs none)."""

import numpy as np
import pytest
import tensorflow as tf

from fl.cluster import DATA_OWNER, Player
from fl.data.pipelines import OwnerPipeline, check_specs, element_spec, shuffled
from fl.errors import FLError, LocalityError

OWNERS = [Player(f"data-owner-{i}", f"127.0.0.1:{7000 + i}", DATA_OWNER, i + 1, f"/owners/{i}") for i in range(2)]


def csv_records(owner: Player) -> tf.data.Dataset:
    lines = tf.data.TextLineDataset(f"{owner.data_dir}/records.csv").skip(1)
    return (
        lines.map(lambda line: tuple(tf.io.decode_csv(line, [[0.0], [0.0], [0]])))
        .map(lambda a, b, label: (tf.stack([a, b]), label))
        .batch(4)
    )


def model_of(shape, outputs: int = 2) -> tf.keras.Model:
    model = tf.keras.Sequential([tf.keras.layers.Dense(outputs, input_shape=shape)])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    return model


def probe(model: tf.keras.Model):
    def step(element):
        features, labels = element[:2]
        return tf.reduce_sum(tf.keras.losses.sparse_categorical_crossentropy(labels, model(features)))

    return step


def test_a_graph_op_pipeline_is_traced_on_its_owner_without_reading_anything():
    spec = element_spec(OwnerPipeline(OWNERS[0], csv_records), batch_size=32)
    assert spec == (tf.TensorSpec([None, 2], tf.float32), tf.TensorSpec([None], tf.int32))


def test_a_pipeline_that_reads_the_drivers_disk_in_python_is_refused_naming_its_owner(tmp_path):
    path = tmp_path / "records.npy"
    np.save(path, np.zeros((10, 2), np.float32))

    def eager_reader(owner):
        return tf.data.Dataset.from_tensor_slices(np.load(path)).batch(4)

    with pytest.raises(LocalityError) as refused:
        element_spec(OwnerPipeline(OWNERS[1], eager_reader), batch_size=32)
    assert str(refused.value) == (
        f"data-owner-1's pipeline reads {path} in Python on the driver: build it from graph ops "
        "(tf.data.TextLineDataset, tf.data.TFRecordDataset, tf.io.read_file) so it reads on the owner"
    )


def test_a_pipeline_with_python_ops_or_the_drivers_records_embedded_is_refused():
    def python_parser(owner):
        return tf.data.Dataset.range(4).map(lambda i: tf.py_function(lambda v: v * 2, [i], tf.int64))

    with pytest.raises(LocalityError, match=r"data-owner-0's pipeline calls Python \(EagerPyFunc"):
        element_spec(OwnerPipeline(OWNERS[0], python_parser), batch_size=32)
    records = np.random.default_rng(0).normal(size=(20_000, 2)).astype(np.float32)  # 160 KB of the driver's memory

    def embedded(owner):
        return tf.data.Dataset.from_tensor_slices(records).batch(4)

    with pytest.raises(LocalityError, match=r"data-owner-0's pipeline embeds 16[0-9]{4} bytes of the driver's data"):
        element_spec(OwnerPipeline(OWNERS[0], embedded), batch_size=32)


def test_owners_whose_element_specs_differ_are_refused_naming_both():
    def three_features(owner):
        return tf.data.Dataset.from_tensors((tf.zeros([4, 3]), tf.zeros([4], tf.int32)))

    pipelines = {OWNERS[0]: OwnerPipeline(OWNERS[0], csv_records), OWNERS[1]: OwnerPipeline(OWNERS[1], three_features)}
    model = model_of((2,))
    with pytest.raises(FLError) as refused:
        check_specs(pipelines, 32, model, probe(model))
    assert str(refused.value) == (
        "data-owner-1's pipeline yields (float32[4, 3], int32[4]) but data-owner-0's yields (float32[None, 2], int32[None]): "
        "every owner must yield the same structure, dtypes and shapes"
    )


def test_a_spec_the_model_cannot_take_is_refused_before_round_0():
    pipelines = {owner: OwnerPipeline(owner, csv_records) for owner in OWNERS}
    model = model_of((5,))
    with pytest.raises(
        FLError,
        match=r"^data-owner-0's pipeline yields \(float32\[None, 2\], int32\[None\]\), which the model "
        r"\(taking \[float32\[None, 5\]\]\) and its loss cannot train on: ",
    ):
        check_specs(pipelines, 32, model, probe(model))
    assert check_specs(pipelines, 32, model_of((2,)), probe(model_of((2,))))[0].shape.as_list() == [None, 2]


def test_a_pipeline_function_may_take_the_rounds_seed():
    seen = []

    def seeded(owner, seed):
        seen.append(seed.dtype)
        return shuffled(tf.data.Dataset.range(8), seed).batch(2)

    assert element_spec(OwnerPipeline(OWNERS[0], seeded), batch_size=32) == tf.TensorSpec([None], tf.int64)
    assert seen == [tf.int64]


def test_shuffled_permutes_every_component_alike_and_differently_for_each_seed():
    records = tf.data.Dataset.from_tensor_slices((tf.range(100), {"twice": 2 * tf.range(100)}))
    orders = []
    for seed in (1, 1, 2):
        values, named = zip(*[(int(v), int(n["twice"])) for v, n in shuffled(records, tf.constant(seed, tf.int64), block=64)])
        assert sorted(values) == list(range(100)) and list(named) == [2 * v for v in values]
        orders.append(values)
    assert orders[0] == orders[1] != orders[2] and orders[0] != tuple(range(100))
