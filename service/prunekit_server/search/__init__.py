"""The latency-target search: the model that reaches a measured latency on this node, losing least.

See :mod:`.run` for the steps, :mod:`.table` for the fleet-wide latency tables (keyed by node kind,
stored by the server, reused by every later job on the same kind of node) and :mod:`.space` for the
width space and its predictions. Importing this package imports nothing heavy; import the modules.
"""
