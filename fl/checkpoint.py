"""The model owner's checkpoints: a run that stops can continue from its last completed round.

After each completed round the weights (and the server optimizer's state: moments, step),
the number of completed rounds and the run's settings are written to the model owner's own
storage by ops placed on the model owner, so the weights never cross the network or touch the driver's disk; only a fingerprint of
them comes back. TF has no remote rename, so a write is made safe by two slots used in
turn: a slot is its weights file and then its manifest (rounds, settings, fingerprint),
and a restore takes the newest slot whose weights match its manifest. A crash in the
middle of a write leaves the other slot, one round older, intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tensorflow as tf

from fl.cluster import Player
from fl.errors import FLError, first_line

SLOTS = ("a", "b")
DIRECTORY = "checkpoints"
FINGERPRINT_BUCKETS = 2**62
MEMORY_DIR = "/dev/shm"


@dataclass(frozen=True)
class Checkpoint:
    completed_rounds: int
    settings: dict[str, Any]
    slot: str
    fingerprint: int


class ModelOwnerCheckpoints:
    """Checkpoints of `model`'s weights and `state` in `<model owner's data dir>/checkpoints/`, written and read on the
    model owner."""

    def __init__(self, model_owner: Player, model: tf.keras.Model, state: Sequence[tf.Variable] = ()) -> None:
        if not model_owner.data_dir:
            raise FLError(f"the model owner {model_owner.name} has no data directory in the cluster file to keep checkpoints")
        self.model_owner = model_owner
        self.model = model
        self.variables = [*model.weights, *state]
        self.directory = f"{model_owner.data_dir.rstrip('/')}/{DIRECTORY}"

    def _path(self, slot: str, kind: str) -> str:
        return f"{self.directory}/{kind}-{slot}.{'json' if kind == 'manifest' else 'bin'}"

    def save(self, completed_rounds: int, settings: dict[str, Any]) -> None:
        slot = SLOTS[completed_rounds % len(SLOTS)]
        with tf.device(self.model_owner.device_name):
            blob = tf.io.serialize_tensor(tf.stack([tf.io.serialize_tensor(variable) for variable in self.variables]))
            tf.io.write_file(self._path(slot, "weights"), blob)
            manifest = {"completed_rounds": completed_rounds, "settings": settings, "fingerprint": _fingerprint(blob)}
            tf.io.write_file(self._path(slot, "manifest"), tf.constant(json.dumps(manifest)))

    def clear(self) -> None:
        """A new run starts: no slot of an earlier run may be taken for this one's."""
        with tf.device(self.model_owner.device_name):
            for slot in SLOTS:
                tf.io.write_file(self._path(slot, "manifest"), tf.constant(""))

    def latest(self) -> Checkpoint | None:
        """The newest slot whose weights are whole, or None when there is none."""
        found = []
        for slot in SLOTS:
            manifest = self._read_manifest(slot)
            if manifest is not None:
                found.append(Checkpoint(manifest["completed_rounds"], manifest["settings"], slot, manifest["fingerprint"]))
        for checkpoint in sorted(found, key=lambda c: c.completed_rounds, reverse=True):
            if self._weights_fingerprint(checkpoint.slot) == checkpoint.fingerprint:
                return checkpoint
        return None

    def restore(self, checkpoint: Checkpoint) -> None:
        """Assign the checkpoint's weights and state, on the model owner; refuse a model of another shape."""
        with tf.device(self.model_owner.device_name):
            stored = tf.io.parse_tensor(tf.io.read_file(self._path(checkpoint.slot, "weights")), tf.string)
        if int(tf.shape(stored)[0]) != len(self.variables):
            values = []
        else:
            with tf.device(self.model_owner.device_name):
                values = [tf.io.parse_tensor(stored[i], variable.dtype) for i, variable in enumerate(self.variables)]
        if not values or any(value.shape != variable.shape for value, variable in zip(values, self.variables)):
            raise FLError(
                f"the checkpoint of round {checkpoint.completed_rounds} on {self.model_owner.name} holds another model's "
                "weights: train the same model, or start afresh without --resume"
            )
        with tf.device(self.model_owner.device_name):
            for variable, value in zip(self.variables, values):
                variable.assign(value)

    def export(self, path: str) -> str:
        """The model in Keras format on the model owner: `path` there, relative to its data directory unless absolute.

        Keras writes only to a local file, so the archive is put together in the driver's memory
        (a RAM-backed directory where the host has one, removed at once); an op placed on the model
        owner writes it. Returns where the file is on the model owner.
        """
        target = path if path.startswith("/") else f"{self.model_owner.data_dir.rstrip('/')}/{path}"
        with tempfile.TemporaryDirectory(dir=MEMORY_DIR if os.path.isdir(MEMORY_DIR) else None) as scratch:
            local = Path(scratch) / "model.keras"
            self.model.save(local)
            archive = local.read_bytes()
        try:
            with tf.device(self.model_owner.device_name):
                tf.io.write_file(target, tf.constant(archive))
        except tf.errors.OpError as error:
            raise FLError(f"could not write {target} on {self.model_owner.name}: {first_line(error.message)}") from None
        return target

    def _read_manifest(self, slot: str) -> dict | None:
        try:
            with tf.device(self.model_owner.device_name):
                text = tf.io.read_file(self._path(slot, "manifest"))
            manifest = json.loads(text.numpy().decode())
        except (tf.errors.NotFoundError, ValueError):
            return None  # never written, or torn by a crash
        return manifest if {"completed_rounds", "settings", "fingerprint"} <= set(manifest) else None

    def _weights_fingerprint(self, slot: str) -> int | None:
        try:
            with tf.device(self.model_owner.device_name):
                return _fingerprint(tf.io.read_file(self._path(slot, "weights")))
        except tf.errors.NotFoundError:
            return None


def _fingerprint(blob: tf.Tensor) -> int:
    """Computed where `blob` is (the model owner): only this number leaves it."""
    return int(tf.strings.to_hash_bucket_fast(blob, FINGERPRINT_BUCKETS))


class CheckpointEachRound:
    """A round listener: the model owner checkpoints after every completed round."""

    def __init__(self, checkpoints: ModelOwnerCheckpoints, settings: dict[str, Any]) -> None:
        self.checkpoints = checkpoints
        self.settings = settings

    def round_completed(self, result) -> None:
        try:
            self.checkpoints.save(result.index + 1, self.settings)
        except tf.errors.OpError as error:
            raise FLError(
                f"round {result.index} completed but its checkpoint on {self.checkpoints.model_owner.name} failed: "
                f"{first_line(error.message)}"
            ) from None

    def round_failed(self, index: int, error: FLError) -> None:
        """The last checkpoint stays: it is the model as it still is."""


def check_resumable(checkpoint: Checkpoint, settings: dict[str, Any]) -> None:
    """A resumed run computes what the run that wrote the checkpoint computed (`settings` leaves out e.g. epochs)."""
    differences = [
        f"{name}={checkpoint.settings.get(name)!r} (this run: {value!r})"
        for name, value in settings.items()
        if checkpoint.settings.get(name) != value
    ]
    if differences:
        raise FLError(
            f"--resume: the checkpoint of round {checkpoint.completed_rounds} was written with "
            f"{', '.join(differences)}: run with its settings, or start afresh without --resume"
        )
