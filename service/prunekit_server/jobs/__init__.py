"""Jobs, in four rooms: :mod:`.durable` (what outlives a server: job records and their stores,
leases, published results, checkpoints and datasets in object storage), :mod:`.execution` (running
jobs and analyses on this server: the executor seam, the ``local`` executor, the sandbox, the
sweeper), :mod:`.ray` (the ``ray`` executor: jobs handed to a Ray cluster) and :mod:`.worker` (the
child process that runs one task, started by the sandbox)."""
