"""facewatchd: edge face recognition with a local face cache and a shared resolver."""

import os

# One BLAS thread: the daemon's parallelism comes from its CV thread pool, and a multi-threaded BLAS
# turns the cache's sub-millisecond match on the event loop into occasional 10 ms stalls. Set before
# numpy loads; an operator's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
