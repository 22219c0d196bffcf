"""Command-line entry points (``python tools/<name>.py --help``); importable as ``tools.<name>`` for tests."""
