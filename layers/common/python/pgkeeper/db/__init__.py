"""The database side of every job: connections, the advisory lock, run history and migrations."""

from .database import Database

__all__ = ["Database"]
