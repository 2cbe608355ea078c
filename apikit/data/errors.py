"""What goes wrong with a data set on disk, said once and plainly."""

__all__ = ["DataSetNotFound", "CountMismatchWarning"]


class DataSetNotFound(FileNotFoundError):
    """A data set is missing, partial or could not be fetched.

    The message names the path tried, the files expected there and how to get them. Raise it
    `from None`: the message is the whole story, so no chained traceback follows it.
    """

    def __str__(self):
        return self.args[0] if self.args else super().__str__()


class CountMismatchWarning(UserWarning):
    """The split sizes or class count a reader found differ from the data set's official ones."""
