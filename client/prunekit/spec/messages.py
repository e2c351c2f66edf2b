"""Rules every message of a spec follows: no unknown field numbers, no undefined enum values."""

from __future__ import annotations

from google.protobuf import unknown_fields
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from .violation import FieldViolation

__all__ = ["undefined_enums", "unknown_field_numbers"]


def unknown_field_numbers(message: Message, path: str, found: list[FieldViolation]) -> None:
    """A violation (at the message's path) for each field number the message's schema does not know."""
    unknown = unknown_fields.UnknownFieldSet(message)
    for index in range(len(unknown)):
        found.append(FieldViolation(path, f"unknown field number {unknown[index].field_number}"))
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        if field.is_repeated:
            for i, element in enumerate(value):
                unknown_field_numbers(element, f"{path}.{field.name}[{i}]", found)
        else:
            unknown_field_numbers(value, f"{path}.{field.name}", found)


def undefined_enums(message: Message, path: str, found: list[FieldViolation]) -> None:
    """A violation for each enum field (at any depth) holding a number its enum does not define."""
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            elements = value if field.is_repeated else [value]
            for i, element in enumerate(elements):
                suffix = f"[{i}]" if field.is_repeated else ""
                undefined_enums(element, f"{path}.{field.name}{suffix}", found)
        elif field.type == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
            enum_type = field.enum_type
            numbers = value if field.is_repeated else [value]
            for number in numbers:
                if enum_type.values_by_number.get(number) is None:
                    found.append(
                        FieldViolation(f"{path}.{field.name}", f"undefined {enum_type.name} value {number}")
                    )
