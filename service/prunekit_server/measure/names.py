"""The names of a job's models, the keys of every measurement (latency, fidelity, accuracy) and of the report.

:data:`BASELINE` is the upload as measured; :data:`PRUNED` the pruned model; :data:`ORIGINAL` the upload
as the source of a quantization (``original_int8``...); :data:`DYNAMIC` the input-dependent model of
prune method DYNAMIC.
"""

from __future__ import annotations

BASELINE = "baseline"
PRUNED = "pruned"
ORIGINAL = "original"
DYNAMIC = "dynamic"
