"""The two applications, side by side at the top: the device (`device.py`, `facewatchd run`) and the on-prem
resolver service (`resolver_service.py`, `facewatchd resolver` / `shadow`), the config they assemble
(`config.py`) and the wiring they share (`wiring.py`). Nothing below imports this package."""
