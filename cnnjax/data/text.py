"""Text classification inputs for `textcnn`: token ids padded to a fixed length, and a synthetic
keyword task to train on without a corpus.

Convention: id 0 is padding (`PAD`), id 1 an unknown word (`UNK`); real tokens start at 2. A
batch of sentences is (N, max_len) int32 with each sentence's ids first and PAD after it;
longer sentences are cut to their first max_len tokens.

The synthetic task (`keyword_arrays`): vocabulary of `vocab_size` ids; class c owns the
`keywords_per_class` ids KEYWORD_START + c * keywords_per_class + j. A sentence of class c has a
random length in [min_len, max_len], filler tokens drawn uniformly from the non-keyword ids, and
1-3 of its class's keywords at random positions; no other class's keyword appears. A model must
find the keyword wherever it is, which max-over-time pooling does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PAD, UNK = 0, 1
KEYWORD_START = 2
NUM_EXAMPLES = {"train": 4096, "test": 1024}


def pad_sequences(sentences: Sequence[Sequence[int]], max_len: int, *, vocab_size: int,
                  min_len: int = 1) -> np.ndarray:
    """(N, max_len) int32: each sentence's ids, cut to max_len, then PAD. Raises ValueError
    naming the sentence for an id outside [0, vocab_size) or a sentence shorter than min_len
    (a TextCNN needs at least its widest filter's worth of tokens)."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    out = np.full((len(sentences), max_len), PAD, np.int32)
    for i, sentence in enumerate(sentences):
        ids = np.asarray(sentence, np.int64)
        if ids.ndim != 1:
            raise ValueError(f"sentence {i} must be a flat sequence of token ids, got shape "
                             f"{ids.shape}")
        if len(ids) < min_len:
            raise ValueError(f"sentence {i} has {len(ids)} tokens; at least {min_len} needed")
        if len(ids) and (ids.min() < 0 or ids.max() >= vocab_size):
            bad = ids[(ids < 0) | (ids >= vocab_size)][0]
            raise ValueError(f"sentence {i} holds token id {bad}, outside [0, {vocab_size})")
        out[i, :min(len(ids), max_len)] = ids[:max_len]
    return out


def keyword_arrays(num_examples: int, *, vocab_size: int, num_classes: int, max_len: int,
                   seed: int, min_len: int = 8,
                   keywords_per_class: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(token ids int32 (N, max_len) padded with PAD, labels int32 (N,)) of the keyword task."""
    first_filler = KEYWORD_START + num_classes * keywords_per_class
    if vocab_size <= first_filler:
        raise ValueError(f"vocab_size {vocab_size} leaves no filler words after the "
                         f"{num_classes} x {keywords_per_class} keywords; need > {first_filler}")
    if not 3 <= min_len <= max_len:
        raise ValueError(f"need 3 <= min_len <= max_len, got {min_len}, {max_len}")
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, num_examples).astype(np.int32)
    sentences = []
    for label in labels:
        length = int(rng.integers(min_len, max_len + 1))
        ids = rng.integers(first_filler, vocab_size, length)
        count = int(rng.integers(1, 4))
        where = rng.choice(length, count, replace=False)
        ids[where] = KEYWORD_START + label * keywords_per_class + rng.integers(
            0, keywords_per_class, count)
        sentences.append(ids)
    return pad_sequences(sentences, max_len, vocab_size=vocab_size), labels
