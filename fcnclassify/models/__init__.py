"""The models fcnclassify knows by name: how each is built, weighted, normalised."""
