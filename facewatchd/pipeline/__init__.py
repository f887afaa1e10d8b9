"""The device stages, in data-flow order: camera → (detector) → tracker → recognizer (cache) → uplink."""
