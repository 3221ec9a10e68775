"""Apps built on the public layer (``functions.app``) alone."""
