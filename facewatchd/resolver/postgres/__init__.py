"""PostgreSQL adapters for the resolver ports, one module a port: the face collection in pgvector
(collection.py), the name directory (names.py), crops as bytea (crops.py), and the device shadows
(shadows.py); stores.py opens them together, database.py holds the pool they share, schema.py the migrations
run at start, server.py a throwaway PostgreSQL from the `pgserver` wheel (tests, and `trial.py` for a user's
first try).

Several resolver workers share one database: `faces.face_id` is unique, so a face is recorded once however
many workers see it, and `stores.deciding()` (an advisory lock) makes deciding who a face is one worker at a
time, while the embedding, the costly part, runs on every worker at once. This package's __init__
imports nothing, so app/config.py reads config.py without the postgres extra installed.
"""
