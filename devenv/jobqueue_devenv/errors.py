"""The one error type the local environment raises for problems a user can fix."""


class DevenvError(Exception):
    """A problem with a one-line cause and a one-line remedy, printed without a stack trace."""

    def __init__(self, cause: str, remedy: str) -> None:
        super().__init__(f"{cause}. {remedy}")
        self.cause = cause
        self.remedy = remedy
