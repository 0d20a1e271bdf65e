"""`python -m killcli` runs the `killsync` command."""

from __future__ import annotations

from killcli.cli.app import main

if __name__ == "__main__":
    main()
