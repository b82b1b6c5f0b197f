"""``python -m oma`` runs the ``oma`` command line."""

from oma.cli import main

if __name__ == "__main__":
    main(prog_name="oma")
