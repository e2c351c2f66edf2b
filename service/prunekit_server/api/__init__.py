"""Transport: gRPC servicers that convert protos to calls of the layers below. Never loads a model."""
