"""Fixtures shared by every test tier."""

from tests.notify import notify_socket

__all__ = ["notify_socket"]
