"""The annotate stage: a camera's tracked frames as MP4 and MJPEG over HTTP."""
