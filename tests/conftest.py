"""Fixtures shared by every test tier, and the property tests' profile."""

import os

from hypothesis import settings

from tests.notify import notify_socket

# Property tests draw the same examples on every run, so a CI run cannot fail on an input no earlier run tried
# (one did: a mutated export found a crash at the end of a session, which is how it should be found, but not how a
# submission should fail). NWP500D_FUZZ=explore draws new ones, for a fuzzing session by hand:
#   NWP500D_FUZZ=explore .venv/bin/pytest tests/unit/test_hostile_input.py --hypothesis-seed=$RANDOM
settings.register_profile("repeatable", derandomize=True, deadline=None)  # no timing-based failures either
settings.register_profile("explore", derandomize=False)
settings.load_profile("explore" if os.environ.get("NWP500D_FUZZ") == "explore" else "repeatable")

# Tests that read mosquitto's log get mosquitto whatever the developer's shell says; the amqtt tests set it.
os.environ.pop("NWP500D_SIM_BROKER", None)

__all__ = ["notify_socket"]
