"""The resolver: names unknown faces. One core (core.py) over ports (ports.py), with local and AWS adapters."""
