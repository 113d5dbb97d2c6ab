"""segment-worker: real-time customer segments."""
