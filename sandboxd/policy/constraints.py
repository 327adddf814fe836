"""Parameter constraints: a JSON Schema a grant's params must satisfy on top of the tool's own schema.

A role may grant a tool only for some params::

    [roles.analyst]
    tools = [{ name = "file_processor", params = { properties = { path = { pattern = "^reports/" } },
                                                   required = ["path"] } }]

A constraint constrains only what it names: ``pattern`` applies to a ``path`` that is there, so a key that must
be present needs ``required``. It is checked once at load (a valid schema of the draft it names, default
2020-12; JSON values only; self-contained: no ``$ref`` outside it, and none is ever fetched) and compiled once.
A refusal names the JSON path of the value (``$.path``) and the rule it broke (``properties.path.pattern``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import jsonschema.exceptions
import jsonschema.protocols
import jsonschema.validators
import referencing

from sandboxd.base.echo import ECHO_MAX_CHARS, cut

_REF_KEYS = ("$ref", "$dynamicRef", "$recursiveRef")


@dataclass(frozen=True)
class Violation:
    """The first rule of a constraint the params broke."""

    json_path: str  # where in the params: "$.path", "$.filters[0].column"
    rule: str  # where in the constraint: "properties.path.pattern"
    message: str  # jsonschema's own words, bounded

    def describe(self) -> str:
        return f"{self.json_path}: {self.message} (rule {self.rule})"


@dataclass(frozen=True)
class ParamsConstraint:
    """A compiled constraint; equal to another when their schemas are equal."""

    schema: Mapping[str, Any]
    _validator: jsonschema.protocols.Validator = field(compare=False, repr=False)

    @classmethod
    def compile(cls, schema: object) -> ParamsConstraint:
        """Raise ValueError saying what is wrong (and where in the schema) unless ``schema`` is usable."""
        if not isinstance(schema, dict):
            raise ValueError(f"expected a table holding a JSON Schema, got {schema!r}")
        try:
            json.dumps(schema, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"holds a value JSON has not: {exc}") from None
        for where, ref in _refs(schema, ()):
            if not ref.startswith("#"):
                raise ValueError(f"at {where}: $ref {ref!r} points outside the constraint; it must be "
                                 "self-contained (nothing is fetched)")
        validator_class = jsonschema.validators.validator_for(schema)
        try:
            validator_class.check_schema(schema)
        except jsonschema.SchemaError as exc:
            where = ".".join(str(part) for part in exc.absolute_path) or "(top)"
            raise ValueError(f"not a valid JSON Schema at {where}: {exc.message}") from None
        # An empty registry retrieves nothing: a $ref resolves within the constraint or not at all.
        return cls(schema, validator_class(schema, registry=referencing.Registry()))

    def violation(self, params: Mapping[str, Any]) -> Violation | None:
        """The most relevant rule ``params`` break, None when they satisfy the constraint."""
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(params))
        if error is None:
            return None
        rule = ".".join(str(part) for part in error.schema_path) or "(top)"
        return Violation(cut(error.json_path, ECHO_MAX_CHARS), cut(rule, ECHO_MAX_CHARS),
                         cut(error.message, ECHO_MAX_CHARS))

    def to_json(self) -> str:
        return json.dumps(self.schema, sort_keys=True, separators=(",", ":"))


def _refs(value: object, path: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in _REF_KEYS and isinstance(item, str):
                yield ".".join((*path, key)), item
            yield from _refs(item, (*path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _refs(item, (*path, str(index)))


def held_to(constraints: list[ParamsConstraint | None]) -> Mapping[str, Any] | None:
    """The constraint a caller's params are held to beyond the tool's schema, given one entry per grant it may
    use (None = that grant has none): None when any grant is unconstrained, else any one of the constraints."""
    if not constraints or any(constraint is None for constraint in constraints):
        return None
    schemas = list(dict.fromkeys(c.to_json() for c in constraints if c is not None))
    if len(schemas) == 1:
        return dict(json.loads(schemas[0]))
    return {"anyOf": [json.loads(text) for text in schemas]}
