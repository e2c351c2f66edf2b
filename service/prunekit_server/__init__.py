"""prunekit server: the gRPC service, its job runner and the optimization pipeline."""
