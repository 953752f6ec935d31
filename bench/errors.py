"""User-facing errors: the CLI prints these as one line and exits with status 2."""


class UserError(Exception):
    """Bad input the user can fix. The message names the problem and the fix."""


class ModelFileError(UserError):
    """A model file that cannot be used (missing, not ONNX, truncated, unsafe)."""
