"""facewatchd: edge face recognition with a local face cache and a shared resolver."""

__version__ = "0.1.0"
