"""The detect stage: batched YOLO inference, its backends, models and classifier."""
