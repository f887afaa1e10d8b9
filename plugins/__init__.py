"""Built-in integrations. Each is a folder with a manifest.toml and its code, loaded through the same
hooks (facewatchd/hookspecs.py) and the same loader as a third-party plugin."""
