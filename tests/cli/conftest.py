"""The command line: every command, one-line errors and exit codes, start-up before heavy imports."""
