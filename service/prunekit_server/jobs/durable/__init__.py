"""What outlives a server, kept in object storage: the job record and its state machine, the
stores of models, jobs and artifacts (with idempotent creates and the listing index), leases on
the record, publishing a finished job, training checkpoints, and dataset shards. Any server on the
same storage answers for any job from here; nothing in this package starts a thread or a process
except the checkpoint uploader's one thread."""
