"""A small "listening" dataset written for hfself: follow the user's direction, not your own idea.

Each conversation has three labelled segments: the model's own competing idea
(``own_idea``), the user's direction (``direction``) and the response, which
carries out the direction. The two first segments come in either order, so
the answer cannot be read off the most recent text: the model has to look for
the directional cue. Deterministic under a seed.
"""

from __future__ import annotations

import random

ACTIONS = ["paint", "clean", "move", "repair", "sell", "water", "open", "close", "measure", "polish", "wrap", "fold"]
COLOURS = ["red", "green", "blue", "white", "black", "yellow", "grey", "brown"]
OBJECTS = ["fence", "door", "table", "garden", "window", "boat", "roof", "chair", "lamp", "box", "shelf", "gate"]

OWN_TEMPLATES = [
    "My own idea: I could {action} the {colour} {obj}. ",
    "I was thinking of how to {action} the {colour} {obj}. ",
    "Earlier I planned to {action} the {colour} {obj}. ",
]
DIRECTION_TEMPLATES = [
    "User: please {action} the {colour} {obj}. ",
    "User: I want you to {action} the {colour} {obj}. ",
    "User: go and {action} the {colour} {obj}. ",
]
RESPONSE_TEMPLATE = "Assistant: I will {action} the {colour} {obj}."


def listening_conversations(n: int, seed: int = 0) -> list[list[dict]]:
    """``n`` conversations, each a list of ``{"label", "text"}`` segments."""
    rng = random.Random(seed)
    conversations = []
    for _ in range(n):
        obj = rng.choice(OBJECTS)
        own_action, user_action = rng.sample(ACTIONS, 2)
        own_colour, user_colour = rng.sample(COLOURS, 2)
        own = {"label": "own_idea", "text": rng.choice(OWN_TEMPLATES).format(action=own_action, colour=own_colour,
                                                                              obj=obj)}
        direction = {"label": "direction", "text": rng.choice(DIRECTION_TEMPLATES).format(
            action=user_action, colour=user_colour, obj=obj)}
        response = {"label": "response", "text": RESPONSE_TEMPLATE.format(action=user_action, colour=user_colour,
                                                                          obj=obj)}
        context = [own, direction] if rng.random() < 0.5 else [direction, own]
        conversations.append([*context, response])
    return conversations


def conversation_text(conversation: list[dict]) -> str:
    return "".join(segment["text"] for segment in conversation)


DREAM_PROMPTS = ["User: please", "User: I want you to", "My own idea:", "Assistant: I will"]
