"""Sub-commands of the ``erphub`` CLI, one module each (``errors``, ``sync``, ``migrate``...).

Each module defines a ``typer.Typer`` (or plain command functions) and is added to the main app
by one line in :mod:`erphub.cli`, so several commands can grow without touching each other.
"""
