"""The named phases of a round, as metrics and the JSON report them.

A round's phases come from the compiled round itself (fl/rounds.py): local training
is the training stage's wall time on the driver, and the aggregation stage's
sharing, secure sum and reveal end where `tf.timestamp()` on the output receiver
says each stage's tensors exist; the model update runs until the report is back.
"""

STAGES = ("sharing", "aggregation", "reveal")
PHASES = ("local_training", *STAGES, "model_update")
