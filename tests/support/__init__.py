"""Test support: a throwaway PKI (tls.py) and a real mosquitto broker on a free loopback port (broker.py)."""
