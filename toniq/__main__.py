"""``python -m toniq`` is the ``toniq`` command."""

from toniq.cli import main

main(prog_name="toniq")
