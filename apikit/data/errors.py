"""What goes wrong with a data set on disk, said once and plainly."""
from ..notebook_errors import OneLineError

__all__ = ["DataSetNotFound", "InvalidDataSet", "NotWritable", "CountMismatchWarning", "LayoutWarning",
           "UnsupportedImageWarning", "CacheWarning"]


class DataSetNotFound(FileNotFoundError):
    """A data set is missing, partial or could not be fetched.

    The message names the path tried, the files expected there and how to get them. Raise it
    `from None`: the message is the whole story, so no chained traceback follows it.
    """

    def __str__(self):
        return self.args[0] if self.args else super().__str__()


class InvalidDataSet(ValueError):
    """A data set is on disk but cannot be read as it is without faking a result: index paths that leave its
    folder, images below a class folder or in no class folder, link loops, an image in both splits, classes
    with test images only. The message names the offending paths and says how to fix them."""

    def __str__(self):
        return self.args[0] if self.args else super().__str__()


class NotWritable(OneLineError, PermissionError):
    """A folder apikit writes data into (the data root, APIKIT_DATA) refuses writes: read-only, or a file in the way.
    The message names it and the fix, and is all a notebook shows."""


class CountMismatchWarning(UserWarning):
    """The split sizes or class count a reader found differ from the data set's official ones."""


class LayoutWarning(UserWarning):
    """A data set's folder is usable but not self-contained (e.g. links that lead outside it)."""


class UnsupportedImageWarning(UserWarning):
    """Images whose pixels (16-bit, 32-bit integer, float) 8-bit RGB would clip: excluded, and named."""


class CacheWarning(UserWarning):
    """A cached file (a resized image, the verified-images list) was damaged, replaced or not apikit's: rebuilt."""
