"""Every message model, by its `type`: for decoding, schema export and tests."""

from __future__ import annotations

from pydantic import BaseModel

from contracts import auth, generation, jobs, notifications, prompt, training
from contracts.base import Command, Event, Message


def _concrete(module) -> list[type[BaseModel]]:
    found = []
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and issubclass(value, Message)
            and value not in (Message, Command, Event)
            and "type" in value.model_fields
            and value.__module__ == module.__name__
        ):
            found.append(value)
    return found


MESSAGES: dict[str, type[Message]] = {
    model.model_fields["type"].default: model
    for module in (auth, prompt, training, generation, jobs, notifications)
    for model in _concrete(module)
}
EVENTS: dict[str, type[Event]] = {
    name: model for name, model in MESSAGES.items() if issubclass(model, Event)
}
COMMANDS: dict[str, type[Command]] = {
    name: model for name, model in MESSAGES.items() if issubclass(model, Command)
}

