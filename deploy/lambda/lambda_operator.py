"""`operator_handler`'s requests: list persons, label, forget, merge, move a face, reject a face."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, TypeAdapter

from facewatchd.resolver.core import Resolver


class ListAction(BaseModel):
    action: Literal["list"]


class LabelAction(BaseModel):
    action: Literal["label"]
    person_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
    name: str = Field(min_length=1, max_length=128)


class ForgetAction(BaseModel):
    action: Literal["forget"]
    person_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")


class MergeAction(BaseModel):
    """Person `gone` was `person_id` all along."""

    action: Literal["merge"]
    person_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
    gone: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")


class MoveAction(BaseModel):
    """One face was the wrong person: it becomes `person_id`'s."""

    action: Literal["move"]
    face_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
    person_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")


class RejectAction(BaseModel):
    """Not this person: the face leaves its person."""

    action: Literal["reject"]
    face_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")


OperatorAction = ListAction | LabelAction | ForgetAction | MergeAction | MoveAction | RejectAction
OPERATOR_REQUEST: TypeAdapter[OperatorAction] = TypeAdapter(
    Annotated[Union[ListAction, LabelAction, ForgetAction, MergeAction, MoveAction, RejectAction],
              Field(discriminator="action")])


async def operate(resolver: Resolver, request: OperatorAction) -> dict[str, Any]:
    """One validated request, answered as the operator handler returns it."""
    try:
        if isinstance(request, ListAction):
            return {"ok": True, "persons": [dataclasses.asdict(p) for p in await resolver.persons()]}
        if isinstance(request, LabelAction):
            person = await resolver.label(request.person_id, request.name)
        elif isinstance(request, ForgetAction):
            person = await resolver.forget(request.person_id)
        elif isinstance(request, MergeAction):
            person = await resolver.merge(request.person_id, request.gone)
        elif isinstance(request, MoveAction):
            person = await resolver.move(request.face_id, request.person_id)
        else:
            person = await resolver.reject(request.face_id)
    except KeyError as e:
        what = "face" if isinstance(request, (MoveAction, RejectAction)) and e.args[0] == request.face_id else "person"
        return {"ok": False, "error": f"unknown {what} {e.args[0]}"}
    except ValueError as e:
        return {"ok": False, "error": str(e)}
    return {"ok": True, "person": dataclasses.asdict(person)}
