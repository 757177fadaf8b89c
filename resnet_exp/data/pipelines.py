"""`tf.data` pipelines over a `Dataset`'s arrays: shuffled, normalised, optionally augmented.

Image datasets are normalised per channel here, with the training split's
statistics, and augmented as He et al. 2016 do (pad 4, random crop of the
original size, random horizontal flip).
"""

from __future__ import annotations

import numpy as np

from resnet_exp.data.splits import Dataset


def make_pipelines(
    data: Dataset, *, batch_size: int, seed: int, shuffle_buffer: int = 0, augment: bool = False
):
    """Train (shuffled each epoch, seeded, optionally augmented) and validation pipelines.

    The validation pipeline is None when the split has no validation set. The
    source arrays are already in memory, so there is no `cache()` (it would be a
    second copy); augmentation uses stateless random ops seeded per element from
    `seed`, so a parallel `map` gives the same images in any thread order.
    """
    import tensorflow as tf

    buffer = shuffle_buffer or len(data.x_train)
    train = tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train)).shuffle(
        buffer, seed=seed, reshuffle_each_iteration=True
    )
    if augment:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        train = tf.data.Dataset.zip(train, seeds).map(
            _augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
    train = _finish(train.batch(batch_size), data)
    val = None
    if len(data.x_val):
        val = eval_pipeline(data, data.x_val, data.y_val, batch_size=batch_size)
    return train, val


def eval_pipeline(data: Dataset, x: np.ndarray, y: np.ndarray, *, batch_size: int):
    """Batches of `x`, `y` normalised as in training, in order: validation and test sets."""
    import tensorflow as tf

    return _finish(tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size), data)


def _finish(batches, data: Dataset):
    """Normalise whole batches (one vectorised op) and prefetch."""
    import tensorflow as tf

    if data.mean is not None:
        mean = tf.constant(data.mean, tf.float32)
        std = tf.constant(data.std, tf.float32)
        batches = batches.map(
            lambda x, y: ((tf.cast(x, tf.float32) - mean) / std, y),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return batches.prefetch(tf.data.AUTOTUNE)


def _augment(example, seed):
    """He et al. 2016: pad 4 pixels a side, a random crop of the original size, a random flip."""
    import tensorflow as tf

    x, y = example
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    padded = tf.pad(x, [[4, 4], [4, 4], [0, 0]])
    x = tf.image.stateless_random_crop(padded, tf.shape(x), seed=crop_seed)
    return tf.image.stateless_random_flip_left_right(x, seed=flip_seed), y
