"""A byte-level tokenizer built in memory: no files, no hub, every UTF-8 text encodes losslessly.

Ids are readable: the four specials take 0–3 and byte `b` takes id `4 + b`, so a token id says which byte
it is. The bundled tiny Mixtral and the tests' tiny models of every family use it.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
"""Ids 0–3: pad, bos, eos, unk; model configs use the same ids."""


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte → printable character table, the alphabet of the ByteLevel pre-tokenizer."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """Vocabulary = 4 specials + the 256 bytes (260 ids), no merges."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    vocab.update({char: len(SPECIAL_TOKENS) + b for b, char in _bytes_to_unicode().items()})
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
