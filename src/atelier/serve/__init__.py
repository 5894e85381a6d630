"""HTTP service and web page, a thin layer over the Python API (a later issue)."""
