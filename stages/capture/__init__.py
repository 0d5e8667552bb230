"""Capture stages: the readers of files, RTSP, HTTP (MJPEG) and USB cameras."""
