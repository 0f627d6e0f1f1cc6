"""The two ways a NaviLink call fails, as the session supervisor must treat them.

Only a rejected password is fatal: retrying it forever would lock the account or hide the problem. Everything else
(network, DNS, timeouts, 5xx, garbage from a proxy) is retriable, and ``reason`` is a short stable name so that
retries can be counted and explained without parsing messages.
"""

from __future__ import annotations


class NaviLinkError(Exception):
    """Base of the client's errors, so a caller can catch both with one clause and still tell them apart."""

    retriable = True


class CredentialsRejected(NaviLinkError):
    """The account's e-mail or password was refused at sign-in. Retrying will not help; a person must act."""

    retriable = False

    def __init__(self, server_said: str = "") -> None:
        said = f" (server said: {server_said})" if server_said else ""
        super().__init__(
            f"NaviLink rejected the sign-in for <email redacted>{said}; check account.email and the "
            "navien-password credential (sign in to the NaviLink app to confirm them), then restart nwp500d"
        )


class NaviLinkUnavailable(NaviLinkError):
    """The cloud could not be used just now; the caller retries with backoff.

    ``reason`` examples: ``timeout``, ``connection_error``, ``dns_error``, ``tls_error``, ``http_503``,
    ``malformed_json``, ``malformed_response``, ``envelope_500``, ``unauthorized``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
