"""The five benchmarks of the paper (plus a synthetic set and your own folders) as fastai DataLoaders.

    dls = get_dls("cub", size=448, resize=512, n_classes=30, n_images=4)
    df = read_split("cub")   # the official split as a DataFrame, without building loaders
"""
from .core import get_dls
from .errors import CountMismatchWarning, DataSetNotFound
from .locate import data_root
from .readers import read_split
from .sources import NAMES, SOURCES

__all__ = ["get_dls", "read_split", "data_root", "DataSetNotFound", "CountMismatchWarning", "NAMES", "SOURCES"]
