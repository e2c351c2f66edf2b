"""The worker child process (``python -m prunekit_server.jobs.worker.main``), which runs one task
through the pipeline under resource limits; the fence that stops it when its server stops renewing
the job's lease; and the fault hooks the test suite injects into it, with which failures are retried."""
