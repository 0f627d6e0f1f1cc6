"""What the classifier concludes, as plain data: a verdict with evidence, secondary causes, and one line per drop.

Cause ids are stable (they appear in JSON exports, Prometheus labels and people's scripts): ``server_timeout``,
``network``, ``rate_limit``, ``system_event``, ``client_config``, ``insufficient_data``; ``unexplained`` only for a
single drop nothing points at.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CAUSES = ("server_timeout", "network", "rate_limit", "system_event", "client_config", "insufficient_data")
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Finding:
    cause: str
    subcause: str | None
    confidence: float
    evidence: tuple[str, ...]
    recommendation: str
    share: float = 1.0  # of the drops this finding explains

    def to_dict(self) -> dict[str, Any]:
        return {"cause": self.cause, "subcause": self.subcause, "confidence": round(self.confidence, 2),
                "evidence": list(self.evidence), "recommendation": self.recommendation,
                "share": round(self.share, 3)}


@dataclass(frozen=True)
class DropVerdict:
    timestamp: str
    error_name: str | None
    cause: str
    subcause: str | None
    evidence: tuple[str, ...]
    duration_connected_seconds: float | None = None
    host_events: list[dict[str, Any]] = field(default_factory=list)
    drop_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"timestamp": self.timestamp, "drop_id": self.drop_id, "error_name": self.error_name,
                "cause": self.cause, "subcause": self.subcause, "evidence": list(self.evidence),
                "duration_connected_seconds": self.duration_connected_seconds, "host_events": self.host_events}


@dataclass(frozen=True)
class Analysis:
    verdict: Finding
    secondary: tuple[Finding, ...]
    drops: tuple[DropVerdict, ...]
    observed_hours: float
    sessions: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "verdict": self.verdict.to_dict(),
            "secondary": [finding.to_dict() for finding in self.secondary],
            "drops": [drop.to_dict() for drop in self.drops],
            "observed_hours": round(self.observed_hours, 2),
            "sessions": self.sessions,
        }
