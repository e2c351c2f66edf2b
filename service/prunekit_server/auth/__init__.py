"""Who is calling: TLS credentials, bearer tokens (static and JWT), client certificates, and the
interceptor that turns them into the :class:`~.identity.Identity` every call runs as."""
