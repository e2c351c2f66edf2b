"""The URIs clients see for a tenant's stored objects: ``prunekit://<key below tenants/<t>/>``.

A model is ``prunekit://models/<sha256>/model``, an uploaded shard ``prunekit://datasets/<sha256>/data.npz``,
an artifact ``prunekit://jobs/<id>/attempts/<n>/<name>``. They name an object relative to the caller's
tenant, so they never show where the server keeps it (a directory, a bucket) and mean the same on every
replica; the same URI in two tenants names two different objects.

Read back (:meth:`TenantUris.key_for_uri`), a ``prunekit://`` URI and, for what older servers handed
out, a URI of the object store itself (``file:///...``, ``s3://bucket/...``) are both accepted, as long
as the key lies inside the tenant.
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from ...storage import InvalidKey, ObjectStore, validate_key
from .keys import TENANTS_PREFIX

SCHEME = "prunekit://"
_URI_LISTS = frozenset({"prunekit.v1.DataSpec.train", "prunekit.v1.DataSpec.eval"})
"""Repeated string fields that hold URIs (besides every string field named ``uri``)."""


class TenantUris:
    """Logical URIs of one tenant's keys in ``store``."""

    def __init__(self, store: ObjectStore, tenant: str) -> None:
        self.store = store
        self.root = f"{TENANTS_PREFIX}{tenant}/"

    def uri_for(self, key: str) -> str:
        """The URI of ``key`` (a key inside the tenant: ``ValueError`` otherwise)."""
        if not key.startswith(self.root):
            raise ValueError(f"{key!r} is not a key of {self.root!r}")
        return SCHEME + key[len(self.root) :]

    def key_for_uri(self, uri: str) -> str:
        """The key ``uri`` names; :class:`InvalidKey` when it is neither form or lies outside the tenant."""
        if uri.startswith(SCHEME):
            key = validate_key(self.root + uri[len(SCHEME) :])
        else:
            key = self.store.key_for_uri(uri)
        if not key.startswith(self.root):
            raise InvalidKey(f"{uri!r} is not an object of this tenant")
        return key

    def shown(self, uri: str) -> str:
        """``uri`` as a client should see it: a store URI of this tenant becomes its ``prunekit://`` form;
        any other text is returned unchanged."""
        if not uri or uri.startswith(SCHEME):
            return uri
        try:
            return self.uri_for(self.key_for_uri(uri))
        except InvalidKey:
            return uri

    def show_in(self, message: Message) -> None:
        """Every URI ``message`` holds (any string field ``uri``, and a spec's data shards), nested messages
        included, in the form :meth:`shown` gives: records older servers wrote with store URIs read back
        without the store's location."""
        for field, value in message.ListFields():
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                entry = field.message_type is not None and field.message_type.GetOptions().map_entry
                for item in [] if entry else value if field.is_repeated else [value]:
                    self.show_in(item)
            elif field.full_name in _URI_LISTS:
                value[:] = [self.shown(v) for v in value]
            elif field.name == "uri" and field.type == FieldDescriptor.TYPE_STRING:
                setattr(message, field.name, self.shown(value))

    def names(self, uri: str, key: str) -> bool:
        """Whether ``uri`` (either form) names ``key``."""
        try:
            return self.key_for_uri(uri) == key
        except InvalidKey:
            return False
