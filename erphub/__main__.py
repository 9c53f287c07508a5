"""``python -m erphub`` runs the command line, like the ``erphub`` script."""
from erphub.cli import app

app()
