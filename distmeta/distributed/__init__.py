"""The Ray layer: MetaWorker and ParameterServer actors (the only Ray core code)."""

from distmeta.distributed.cluster import connect, start_server, start_workers
from distmeta.distributed.server import ParameterServer
from distmeta.distributed.worker import MetaWorker

__all__ = ["MetaWorker", "ParameterServer", "connect", "start_server", "start_workers"]
