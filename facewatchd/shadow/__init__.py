"""AWS IoT Device Shadow semantics (document.py) and a shadow service over any MQTT broker (service.py)."""
