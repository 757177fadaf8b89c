"""Data: datasets as NumPy splits (`splits`), files in their original formats (`files`),
and the `tf.data` pipelines that feed training (`pipelines`)."""
