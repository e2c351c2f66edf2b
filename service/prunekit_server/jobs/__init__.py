"""Jobs: the record and its states, the store that keeps records in object storage,
the executor that runs each job in a sandboxed worker process."""
