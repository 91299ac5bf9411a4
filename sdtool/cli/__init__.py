"""The command-line interface: parses options, calls library functions, renders results."""
