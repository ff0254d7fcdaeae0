"""The JSON bodies the viewer's API accepts, read and typed strictly before anything acts on them.

A body is parsed by :func:`petctfm.io.bounded_json.loads_bounded` (size, nesting depth, number length and
non-finite numbers capped; one :class:`~petctfm.core.errors.InputError` line otherwise) and validated by the
pydantic model of its action in *strict* mode: ``"version": "abc"``, ``null`` or ``[0]``, ``"ras": "abc"``,
``"object": "abc"``, ``"positive": "false"`` (a string, which ``bool()`` would take as true) are refused with
one line naming the field. The app answers every :class:`InputError` with 422, so no wrongly typed body
reaches the case state (where it used to end in a 500).

Actions without a model here (routes added later) are held to :class:`Versioned`: an object with an integer
``version`` and a string ``user``; their own fields stay theirs to check.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from petctfm.core.errors import InputError
from petctfm.io.bounded_json import loads_bounded

Number = Annotated[StrictFloat | StrictInt, Field(allow_inf_nan=False)]  # a finite JSON number
Point = Annotated[list[Number], Field(min_length=3, max_length=3)]
ObjectId = Annotated[StrictInt, Field(ge=1, le=65535)]


class Body(BaseModel):
    """Every body: a JSON object; fields not named by the model are ignored (the page may send more)."""

    model_config = ConfigDict(strict=True, extra="ignore")
    user: Annotated[StrictStr, Field(max_length=1024)] = ""


class Versioned(Body):
    """A change: it names the case version the page shows (the 409 check)."""

    version: Annotated[StrictInt, Field(ge=0)]


class Targeted(Versioned):
    """A change that makes or edits an object: the object it goes to (None: the server picks) and what it is."""

    object: ObjectId | None = None
    kind: Annotated[StrictStr, Field(max_length=64)] | None = None  # its values: state.parse_kind
    name: Annotated[StrictStr, Field(max_length=256)] | None = None


class Click(Targeted):
    ras: Point
    positive: StrictBool = True


class Box(Targeted):
    lo: Point
    hi: Point


class Delete(Versioned):
    object: ObjectId


class Stroke(Targeted):
    """brush / erase: one point (``ras``) or a stroke (``points``), a radius, a plane (None: a 3D sphere)."""

    ras: Point | None = None
    points: Annotated[list[Point], Field(min_length=1, max_length=2000)] | None = None  # state.MAX_STROKE
    radius_mm: Number = 5.0
    plane: Annotated[StrictStr, Field(max_length=16)] | None = None


class Grow(Targeted):
    """grow: an isocontour from a click, at ``fraction`` of the local SUVmax or at a fixed ``suv``."""

    ras: Point
    box_mm: Number | None = None
    suv: Number | None = None
    fraction: Number | None = None


class Threshold(Targeted):
    lo: Point
    hi: Point
    suv: Number | None = None
    fraction: Number | None = None


class Confirm(Versioned):
    object: ObjectId


MODELS: dict[str, type[Body]] = {"click": Click, "box": Box, "delete": Delete, "save": Body, "brush": Stroke,
                                 "erase": Stroke, "grow": Grow, "threshold": Threshold, "confirm": Confirm}


def read_body(raw: bytes, action: str, max_bytes: int) -> dict[str, Any]:
    """The body of ``action`` as a dict of the fields given (unset optional fields stay absent), or one
    :class:`InputError` line: ``click: version: Input should be a valid integer (got 'abc')``."""
    doc = loads_bounded(raw or b"{}", what=f"{action} request body", max_bytes=max_bytes)
    if not isinstance(doc, dict):
        raise InputError(f"{action} request body must be a JSON object, got {type(doc).__name__}")
    model = MODELS.get(action, Versioned)
    try:
        parsed = model.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        got = repr(first.get("input"))
        got = got if len(got) <= 40 else got[:37] + "..."
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        if first["type"] == "missing":
            raise InputError(f"{action}: {where} is required{more}") from None
        raise InputError(f"{action}: {where}: {first['msg']} (got {got}){more}") from None
    given = parsed.model_dump(exclude_unset=True)
    return {**{k: v for k, v in doc.items() if k not in type(parsed).model_fields}, **given}


__all__ = ["Body", "Box", "Click", "Confirm", "Delete", "Grow", "MODELS", "Stroke", "Targeted", "Threshold",
           "Versioned", "read_body"]
