"""The Ray layer: MetaWorker and ParameterServer actors (the only Ray core code)."""

from distmeta.distributed.cluster import (adapt_in_parallel, check_resources, connect, release, reserve, start_server,
                                         start_worker, start_workers, where)
from distmeta.distributed.server import ParameterServer
from distmeta.distributed.worker import MetaWorker

__all__ = ["MetaWorker", "ParameterServer", "adapt_in_parallel", "check_resources", "connect", "release", "reserve",
           "start_server", "start_worker", "start_workers", "where"]
