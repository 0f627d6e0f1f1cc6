"""MQTT topic matching (pure): which subscription filter a received topic belongs to."""

from __future__ import annotations


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT 3.1.1 matching: ``+`` is one level, a trailing ``#`` is any number of levels (including none)."""
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return index == len(filter_levels) - 1
        if index >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[index]:
            return False
    return len(filter_levels) == len(topic_levels)
