"""Errors that reach a person: one line saying what is wrong and one saying what to do."""


class MedAIError(Exception):
    """An expected failure with a clear message and a hint for the user.

    The CLI prints ``message`` and ``hint`` on one line and exits non-zero without a traceback;
    the Slicer modules show the same text in a message box.
    """

    exit_code = 2

    def __init__(self, message: str, hint: str = ""):
        from MedAILib.core.redact import redact  # every message and hint, before anyone can print it

        message, hint = redact(message), redact(hint or "")
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message


class InputError(MedAIError):
    """The input data is missing, unreadable or unsuitable."""


class ModelError(MedAIError):
    """A model is missing, untrusted, corrupt or incompatible."""


class DownloadError(MedAIError):
    """A download failed or its checksum did not match."""


class OutputError(MedAIError):
    """An output could not be written (disk full, quota, read-only folder)."""


class Cancelled(MedAIError):
    """The user cancelled a running job."""

    exit_code = 130

    def __init__(self, message: str = "cancelled by the user", hint: str = ""):
        super().__init__(message, hint)
