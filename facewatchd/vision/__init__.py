"""Computer vision: YuNet face detection and SFace embeddings (OpenCV), behind small typed classes."""
