"""Reading: photos, weights files, label lists."""
