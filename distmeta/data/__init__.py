"""Image datasets: Parquet files made by the importers, loaded as numpy arrays.

    from distmeta.data import import_omniglot, load_dataset

    import_omniglot(["images_background.zip"], "data/omniglot.parquet")
    data = load_dataset("data/omniglot.parquet")  # data.images: (19280, 1, 28, 28) uint8
"""

import importlib

from distmeta.data.dataset import DataError, ImageDataset, from_arrays

# Loaded on first use, so that importing DataError or ImageDataset (as every
# `import distmeta` does) costs no pyarrow.parquet, pyarrow.compute or tqdm.
_LAZY = {"load_dataset": "parquet", "write_dataset": "parquet", "dataset_info": "parquet", "format_info": "parquet",
         "import_omniglot": "importers", "import_folder": "importers", "import_miniimagenet": "importers",
         "read_folder": "importers", "read_support": "support"}

__all__ = ["DataError", "ImageDataset", "from_arrays", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"distmeta.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
