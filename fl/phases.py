"""A round's timing: its named phases, as metrics and the JSON report them, and its default deadline.

A round's phases come from the compiled round itself (fl/rounds.py): local training
is the training stage's wall time on the driver, and the aggregation stage's
sharing, secure sum and reveal end where `tf.timestamp()` on the output receiver
says each stage's tensors exist; the model update runs until the report is back.
"""

STAGES = ("sharing", "aggregation", "reveal")
PHASES = ("local_training", *STAGES, "model_update")

# fails a hung round of the default model within a minute; a round of it takes well under a second
DEFAULT_ROUND_TIMEOUT = 30.0
