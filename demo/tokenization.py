"""Byte-level BPE tokenizer for the toy model, plus single-document rows and padding.

Conventions:

* ``<|endoftext|>`` is the only special token (id 0); it serves as BOS, EOS,
  UNK and PAD, as in GPT-2. The HF tokenizer is saved with
  ``add_bos_token=False`` (GPT-2 behaviour); transformer_lens prepends BOS itself.
* A ``Split`` pre-tokenizer runs before the GPT-2 byte-level regex so that the
  tasks' answers are always token boundaries:

  - brackets, with an optional leading space, are isolated: ``")"``, ``" )"``,
    ``"["`` ... never merge with neighbouring punctuation such as ``")."``;
  - runs of two or more capital letters are split into single letters, so the
    acronym ``"FDI"`` is ``F``, ``D``, ``I`` both in training text and when a
    prompt stops after ``"(F"``. Capitalised words (``" Mary"``) are unaffected.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2TokenizerFast, PreTrainedTokenizerBase

__all__ = [
    "SPECIAL_TOKEN",
    "PRETOKENIZE_PATTERN",
    "train_tokenizer",
    "encode_texts",
    "document_rows",
    "pad_batch",
]

SPECIAL_TOKEN = "<|endoftext|>"

#: Pieces isolated before byte-level pre-tokenization (see module docstring).
PRETOKENIZE_PATTERN = r" ?[()\[\]]|\p{Lu}(?=\p{Lu})|(?<=\p{Lu})\p{Lu}"


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> GPT2TokenizerFast:
    """Train a byte-level BPE tokenizer and wrap it as a ``GPT2TokenizerFast``.

    Args:
        texts: Training documents.
        vocab_size: Total vocabulary size, including the 256 byte symbols and
            the special token.

    Returns:
        A tokenizer whose ``bos/eos/unk/pad`` tokens are all ``<|endoftext|>``
        (id 0), ready for ``save_pretrained``.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIAL_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return GPT2TokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL_TOKEN,
        eos_token=SPECIAL_TOKEN,
        unk_token=SPECIAL_TOKEN,
        pad_token=SPECIAL_TOKEN,
        add_bos_token=False,
    )


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, without any special token."""
    if not texts:
        return []
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"]


def document_rows(docs: Sequence[list[int]], context_size: int, bos_id: int) -> tuple[torch.Tensor, int]:
    """One row per document: ``BOS doc``, cut or right-padded with ``bos_id`` to ``context_size``.

    This is the only kind of context the model is trained on and the kind the
    sweep sees (a BOS-prefixed prompt), so activations at every non-BOS position
    are in distribution. Padding positions hold ``bos_id`` and are meant to be
    dropped (sae_lens ``exclude_special_tokens``).

    Returns:
        ``(rows, n_real)``: ``LongTensor[len(docs), context_size]`` and the number
        of non-padding, non-BOS positions in it.
    """
    rows = torch.full((len(docs), context_size), bos_id, dtype=torch.long)
    n_real = 0
    for i, doc in enumerate(docs):
        ids = doc[: context_size - 1]
        rows[i, 1 : len(ids) + 1] = torch.tensor(ids, dtype=torch.long)
        n_real += len(ids)
    return rows, n_real


def pad_batch(seqs: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad sequences into a batch.

    Returns:
        ``(tokens, valid)`` where ``tokens`` is ``LongTensor[B, T]`` and ``valid``
        is ``BoolTensor[B, T]``, True on real (non-padding) positions. Right
        padding leaves causal activations of real positions unchanged.
    """
    width = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    valid = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        valid[i, : len(s)] = True
    return tokens, valid
