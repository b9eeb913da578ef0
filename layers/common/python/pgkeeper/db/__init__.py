"""The database side of every job: connections, the advisory lock, run history and migrations."""

from .bounds import Bound, DeadlineReached, bound, set_timeouts, time_left
from .database import Database, Session

__all__ = ["Bound", "Database", "DeadlineReached", "Session", "bound", "set_timeouts", "time_left"]
