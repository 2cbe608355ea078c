"""The five benchmarks of the paper (plus a synthetic set and your own folders) as fastai DataLoaders.

    dls = get_dls("cub", size=448, resize=512, n_classes=30, n_images=4)
    df = read_split("cub")   # the official split as a DataFrame, without building loaders
"""
from ..lazy import lazy_exports

# Lazy exports: the data set names (`NAMES`, `SOURCES`) load without fastai, for the parameter schema.
_EXPORTS = {"get_dls": "core", "read_split": "readers", "data_root": "locate", "DataSetNotFound": "errors",
            "CountMismatchWarning": "errors", "NAMES": "sources", "SOURCES": "sources"}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
