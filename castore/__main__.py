"""``python -m castore`` runs the castore command."""

from .cli import main

main()
