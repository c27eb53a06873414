class PluginError(Exception):
    """A failure the user can act on: printed as one line, `error: <message>`."""
