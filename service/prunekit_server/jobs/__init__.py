"""Jobs, in three rooms: :mod:`.durable` (what outlives a server: job records and their stores,
leases, published results, checkpoints and datasets in object storage), :mod:`.execution` (running
jobs and analyses on this server: the executor, the sandbox, the sweeper) and :mod:`.worker` (the
child process that runs one task, started by the sandbox)."""
