"""The update each client sends: fixed by its partition id, so the server can check the aggregate."""

import numpy as np

# The same range fl's benchmark draws its updates from, inside SecAgg+'s default clipping range of 8.
UPDATE_RANGE = 4.0


def client_update(partition_id: int, size: int) -> np.ndarray:
    return np.random.default_rng([partition_id, size]).uniform(-UPDATE_RANGE, UPDATE_RANGE, size).astype(np.float32)


def expected_mean(clients: int, size: int) -> np.ndarray:
    return np.mean([client_update(index, size) for index in range(clients)], axis=0)
