"""The journal's vocabulary: one fixed MESSAGE_ID per event type, and the NWP_* field names.

MESSAGE_IDs never change once released (the shipped catalog, packaging/catalog/nwp500d.catalog, explains each one
for ``journalctl -x``, and people filter on them: ``journalctl MESSAGE_ID=78ab6f009b7d45d6ae62333e49bdfffd``). Field
names use the ``NWP_`` prefix because journal catalog substitution (``@NWP_ERROR_NAME@``) accepts only ``[A-Z_]``.
"""

from __future__ import annotations

from typing import Final

MESSAGE_IDS: Final = {
    "started": "a6b5733634a2482a849587c6113ae2ad",
    "session_up": "8aa16d002c7446ab850319787b441b18",
    "session_down": "78ab6f009b7d45d6ae62333e49bdfffd",
    "session_back": "e349ea7a2cf14f40a28ca1906c673d5f",
    "gave_up": "45535649042a4204aa7fc9a6f1412bb8",
    "credentials_rejected": "fe5f80d83785484d923668e9efc1ecd6",
    "reloaded": "e4d5bb63b8a542b6936cb4f8e0a969a4",
    "reload_rejected": "9642936eeaf8479aac372a092ae69d5a",
    "storage_failing": "2e3fc2b33ab84eaabe0c2d97469faefd",
    "storage_recovered": "34f3fd38da13497e850c6f4214bbfde2",
    "stopping": "58d02c73910b4200898d8a3a4383e045",
    "device_deaf": "b6fbd32f3aac4ff0af5a697dbdc02289",
    "drop_correlated": "96b4c11f676342539e906d9894b98160",
    "journal_unavailable": "1d5c0f3e8e2a4b6c9a7f21b0d4e3c5a8",
    "keepalive_experiment_started": "40ad75ff045f41dba6df961a65ee306f",
    "keepalive_experiment_finished": "8b8372a586564622b947dec92f49d1c3",
    "keepalive_experiment_discarded": "d26a790e370341d5b056ae753c229d04",
}

# Structured fields a log call may carry in ``extra=`` (journald gets them; plain stderr does not).
EVENT: Final = "NWP_EVENT"
ERROR_NAME: Final = "NWP_ERROR_NAME"
ERROR_CODE: Final = "NWP_ERROR_CODE"
CAUSE: Final = "NWP_CAUSE"
SESSION_SECONDS: Final = "NWP_SESSION_SECONDS"
DOWNTIME_SECONDS: Final = "NWP_DOWNTIME_SECONDS"
ATTEMPT: Final = "NWP_ATTEMPT"
SESSION_KIND: Final = "NWP_SESSION_KIND"
ENDPOINT: Final = "NWP_ENDPOINT"
STATE_DIRECTORY: Final = "NWP_STATE_DIRECTORY"
HOST_EVENTS: Final = "NWP_HOST_EVENTS"
HOST_SUMMARY: Final = "NWP_HOST_SUMMARY"


def event(name: str, **fields: object) -> dict[str, object]:
    """``extra=`` for a log call: the event name, its MESSAGE_ID, and the given NWP_* fields."""
    if name not in MESSAGE_IDS:
        raise KeyError(f"unknown log event {name!r}")
    return {EVENT: name, "MESSAGE_ID": MESSAGE_IDS[name], **fields}
