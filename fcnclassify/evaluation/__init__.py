"""One evaluation loop and its strategies: dense maps, tiles, stitching, crops, protocols."""
