"""Errors msiforge reports to users as one clean line (never a traceback)."""


class MsiforgeError(Exception):
    """An error with a one-line message meant for the user.

    ``exit_code`` follows the project's conventions: 2 for bad input (boards,
    kernel specs, command-line usage), 1 for failures of the work itself.
    """

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InputError(MsiforgeError):
    """Bad input from the user: exit status 2."""

    exit_code = 2


class FieldError(InputError):
    """Bad content in a file: names the file, the field and the reason."""

    def __init__(self, path: str, field: str, reason: str):
        self.path = path
        self.field = field
        self.reason = reason
        super().__init__(f"{path}: {field}: {reason}")


class BoardError(FieldError):
    """An invalid board file."""


class SpecError(InputError):
    """An invalid or unresolvable kernel spec."""


class EnvironmentProblem(MsiforgeError):
    """A missing host tool or package: says exactly what to install."""


class BuildError(MsiforgeError):
    """A module or kernel build failed."""
