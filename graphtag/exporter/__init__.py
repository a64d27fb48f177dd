"""The export edge: the only part of graphtag that imports torch."""
