"""``python -m geopsp`` (and ``torchrun -m geopsp``) entry point."""

from geopsp.cli.main import cli

if __name__ == "__main__":
    cli(prog_name="geopsp")
