"""What a run is asked to do: the typed config schema, its checks, and the depth rules.

Nothing here imports TensorFlow, so a bad command line fails in well under a second.
"""
