"""Owner-side pipelines as functions, the shape of tfe issue #670: one function per data owner.

    def pipeline(owner):                    # runs on the driver, builds graph ops only
        lines = tf.data.TextLineDataset(f"{owner.data_dir}/own/records.csv").skip(1)
        return lines.map(parse).batch(32)   # (features, labels) or (features, labels, sample_weights)

    model.fit({owner: pipeline for owner in cluster.data_owners}, epochs=10)

The function is called while a round's training function is traced under the owner's
device, so every dataset op it makes runs on the owner: the records are read and parsed
there and never cross the network. What the function must not do is read records in
Python on the driver (open a file, load an array, embed data as constants): `inspect`
traces each pipeline once before round 0 and refuses such a pipeline naming its owner, and
refuses element specs that differ between owners or that the model cannot take.
"""

from __future__ import annotations

import inspect as python_inspect
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import tensorflow as tf

from fl.cluster import Player
from fl.errors import FLError, LocalityError, last_line

# shuffling is exact within blocks of this many records
SHUFFLE_BUFFER = 1 << 16
# a constant this large inside a pipeline is records carried from the driver, not a parameter
EMBEDDED_LIMIT_BYTES = 64 * 1024
PYTHON_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}


class Pipeline(Protocol):
    """What a round trains on: a dataset built on `player`'s device (OwnerData, OwnerPipeline)."""

    player: Player

    def dataset(self, batch_size: int, shuffle_seed: tf.Tensor | None = None) -> tf.data.Dataset: ...


@dataclass(frozen=True, eq=False)
class OwnerPipeline:
    """`build(owner)` or `build(owner, seed)` makes `owner`'s dataset from graph ops; it batches its own data.

    `seed` is the round's seed, a scalar int64 tensor: `shuffled(dataset, seed)` shuffles differently each round
    (`Dataset.shuffle` takes no tensor seed inside the traced round).
    """

    player: Player
    build: Callable[..., tf.data.Dataset]

    def dataset(self, batch_size: int, shuffle_seed: tf.Tensor | None = None) -> tf.data.Dataset:
        if _takes_seed(self.build):
            seed = tf.constant(0, tf.int64) if shuffle_seed is None else shuffle_seed
            return self.build(self.player, seed)
        return self.build(self.player)


def shuffled(dataset: tf.data.Dataset, seed: tf.Tensor, block: int = SHUFFLE_BUFFER) -> tf.data.Dataset:
    """`dataset` shuffled statelessly in `seed` (a tensor, so one traced round serves every round), block by block."""
    pair = tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])

    def permuted(*batch):
        elements = batch if len(batch) > 1 else batch[0]
        order = tf.argsort(tf.random.stateless_uniform([tf.shape(tf.nest.flatten(elements)[0])[0]], pair))
        return tf.nest.map_structure(lambda values: tf.gather(values, order), elements)

    return dataset.batch(block).map(permuted).unbatch()


def _takes_seed(build: Callable) -> bool:
    try:
        parameters = python_inspect.signature(build).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2


def element_spec(pipeline: Pipeline, batch_size: int) -> object:
    """Trace `pipeline` once, under its owner's device, into a scratch graph; refuse it if it reads the driver's data."""
    owner = pipeline.player.name
    graph = tf.Graph()
    with graph.as_default(), tf.device(pipeline.player.device_name), _driver_reads() as reads:
        try:
            dataset = pipeline.dataset(batch_size, tf.constant(0, tf.int64))
        except _DriverReadError:
            dataset = None
        except Exception as error:  # the user's function: its own failure, named
            raise FLError(f"{owner}'s pipeline failed while it was built: {type(error).__name__}: {error}") from None
    if reads:
        raise LocalityError(
            f"{owner}'s pipeline reads {reads[0]} in Python on the driver: build it from graph ops "
            "(tf.data.TextLineDataset, tf.data.TFRecordDataset, tf.io.read_file) so it reads on the owner"
        )
    if not isinstance(dataset, tf.data.Dataset):
        raise FLError(f"{owner}'s pipeline returned {type(dataset).__name__}, not a tf.data.Dataset")
    _refuse_driver_data(owner, graph)
    return dataset.element_spec


def _refuse_driver_data(owner: str, graph: tf.Graph) -> None:
    """Python ops run in the driver's process; large constants are records the driver held."""
    definition = graph.as_graph_def()
    nodes = list(definition.node) + [node for function in definition.library.function for node in function.node_def]
    for node in nodes:
        if node.op in PYTHON_OPS:
            raise LocalityError(
                f"{owner}'s pipeline calls Python ({node.op}, e.g. tf.py_function), which runs on the driver: "
                "build it from graph ops"
            )
        if node.op == "Const" and "value" in node.attr and node.attr["value"].tensor.ByteSize() > EMBEDDED_LIMIT_BYTES:
            size = node.attr["value"].tensor.ByteSize()
            raise LocalityError(
                f"{owner}'s pipeline embeds {size} bytes of the driver's data (e.g. from_tensor_slices of an array): "
                "read the records from the owner's own files with graph ops"
            )


class _DriverReadError(Exception):
    """Raised inside a pipeline function that opens a file in Python while it is traced."""


_watch = threading.local()
_hooked = False


def _driver_reads():
    """A context that lists (and stops) files opened in Python by this thread, except Python's own code."""
    global _hooked
    if not _hooked:
        sys.addaudithook(_audit)
        _hooked = True
    return _Watching()


class _Watching:
    def __enter__(self) -> list[str]:
        _watch.reads = []
        return _watch.reads

    def __exit__(self, *exc_info) -> None:
        _watch.reads = None


def _audit(event: str, args: tuple) -> None:
    reads = getattr(_watch, "reads", None)
    if reads is None or event != "open" or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    path = os.fsdecode(args[0])
    if path.endswith((".py", ".pyc", ".so")) or path.startswith(("/proc", "/dev", "/sys")) or _opened_by_tensorflow():
        return
    reads.append(path)
    raise _DriverReadError(path)


def _opened_by_tensorflow() -> bool:
    """TensorFlow's own work while it traces (AutoGraph's temporary modules), not the pipeline's: the frames between
    the open and the first frame of code outside the installed packages pass through TensorFlow."""
    libraries = tuple({sys.prefix, sys.base_prefix, os.path.dirname(os.__file__)})
    frame = sys._getframe(2)
    while frame is not None:
        filename = frame.f_code.co_filename
        if f"{os.sep}tensorflow{os.sep}" in filename:
            return True
        if not filename.startswith(libraries) and not filename.startswith("<"):
            return False  # the pipeline's own code (or code it calls outside TensorFlow) opened the file
        frame = frame.f_back
    return False


def describe(spec: object) -> str:
    """An element spec as one short line."""
    return str(tf.nest.map_structure(lambda s: f"{s.dtype.name}{list(s.shape)}", spec)).replace("'", "")


def check_specs(pipelines: dict[Player, Pipeline], batch_size: int, model: tf.keras.Model, probe: Callable) -> object:
    """Every owner's element spec, the same for all and one the model takes (`probe(element)` traces model and loss)."""
    specs = {owner: element_spec(pipeline, batch_size) for owner, pipeline in pipelines.items()}
    first_owner, first = next(iter(specs.items()))
    for owner, spec in specs.items():
        if not _compatible(spec, first):
            raise FLError(
                f"{owner.name}'s pipeline yields {describe(spec)} but {first_owner.name}'s yields {describe(first)}: "
                "every owner must yield the same structure, dtypes and shapes"
            )
    for owner, spec in specs.items():
        try:
            tf.function(probe).get_concrete_function(spec)
        except Exception as error:
            inputs = getattr(model, "inputs", None)
            takes = describe([tf.TensorSpec(t.shape, t.dtype) for t in inputs]) if inputs else "its first layer's input"
            raise FLError(
                f"{owner.name}'s pipeline yields {describe(spec)}, which the model (taking {takes}) and its loss "
                f"cannot train on: {last_line(str(error))}"
            ) from None
    return first


def _compatible(a: object, b: object) -> bool:
    try:
        tf.nest.assert_same_structure(a, b)
    except (TypeError, ValueError):
        return False
    pairs = zip(tf.nest.flatten(a), tf.nest.flatten(b))
    return all(x.dtype == y.dtype and x.shape.is_compatible_with(y.shape) for x, y in pairs)
