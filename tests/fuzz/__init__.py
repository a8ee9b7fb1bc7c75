"""Fuzz targets for every parser of outside input, their seed corpora, and the mutator the long run uses."""
