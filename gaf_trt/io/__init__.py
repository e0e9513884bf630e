"""Image, grid, GIF and JSON outputs."""
