"""Running jobs on this server: the executor (queue, dispatchers, retries, shutdown), one worker
start of a job (staging its inputs, the sandboxed worker process, its progress into the record,
publishing), the lease keeper that renews this server's leases, the sweeper that takes over jobs
whose server is gone, and synchronous model analyses on slots of their own."""
