"""Who may call which TensorFlow gRPC method on a player: the mesh's authorization, written down once.

Deny by default; each sidecar's ingress enforces this by the caller's certificate name.

Derived from the sidecars' logs (caller, method) of real runs on the Compose testbed:
`fl train` with each of additive, pond, aby3 and plaintext (training, evaluation), the
cross-container secure average of every protocol, and `fl.bench.measure` rounds:

- the driver called CreateContext, Enqueue, StreamingEnqueue (placing ops and functions),
  GetStatus (a worker's devices) and RecvTensor (reading a result back);
- players called each other's RecvTensor only: a player pulls a tensor it was told to
  receive (a seed, a share, the weights) from the player that holds it.

The driver also keeps the rest of the eager context's life cycle: UpdateContext (a player
restarted), KeepAlive, WaitQueueDone, CloseContext, and RunComponentFunction, which runs
the driver's own multi-device functions. A player never needs those on another player, as
long as no function is *called* on one player with inputs on another (the callee would then
run a component on the other player): `OwnerTrainer.update` copies the weights onto the
owner first for exactly this reason. Graph-mode sessions (MasterService, RunGraph and its
kin), collectives, the coordination and profiler services are used by no one here: denied.

A sidecar's metrics port (GET /metrics, over mutual TLS too) answers Prometheus, which
scrapes every player, and the driver, whose benchmark reads the owners' wire bytes.
"""

from __future__ import annotations

from fl.cluster import DRIVER, MONITOR

EAGER = "/tensorflow.eager.EagerService/"
WORKER = "/tensorflow.WorkerService/"

DRIVER_METHODS = (
    *(
        EAGER + method
        for method in (
            "CreateContext",
            "UpdateContext",
            "Enqueue",
            "StreamingEnqueue",
            "WaitQueueDone",
            "RunComponentFunction",
            "KeepAlive",
            "CloseContext",
        )
    ),
    WORKER + "GetStatus",
    WORKER + "RecvTensor",
)

PEER_METHODS = (WORKER + "RecvTensor",)

METRICS_READERS = (MONITOR, DRIVER)
