"""Opening a store (placeholder while castore/location.py takes over: re-exports it)."""

from .location import *  # noqa: F403
from .location import __all__  # noqa: F401
