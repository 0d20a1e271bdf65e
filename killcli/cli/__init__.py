"""The `killsync` command line: parse, call one service, render."""
