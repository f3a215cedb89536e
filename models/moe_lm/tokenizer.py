"""The moe-lm tokenizer: a byte-level BPE trained locally (the `tokenizers` library) on the training corpus.

Byte-level, so every UTF-8 text encodes without <unk>; specials take ids 0–3 (<pad>, <s>, </s>, <unk>),
the same ids the model config uses. Every domain contributes the same number of characters to the merge
statistics, so the vocabulary is not all Python code. The result is a transformers tokenizer that
`save_pretrained` writes next to the weights and `AutoTokenizer.from_pretrained` reads back offline.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


def _balanced(texts: Mapping[str, Sequence[str]], chars_per_domain: int) -> Iterator[str]:
    for docs in texts.values():
        used = 0
        for doc in docs:
            if used >= chars_per_domain:
                break
            piece = doc[: chars_per_domain - used]
            used += len(piece)
            yield piece


def train_tokenizer(
    texts: Mapping[str, Sequence[str]], vocab_size: int, chars_per_domain: int = 400_000
) -> PreTrainedTokenizerFast:
    """Train on up to `chars_per_domain` characters of each domain's training documents."""
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_balanced(texts, chars_per_domain), trainer=trainer)
    for token_id, token in enumerate(SPECIAL_TOKENS):
        if core.token_to_id(token) != token_id:
            raise RuntimeError(f"special token {token} got id {core.token_to_id(token)}, expected {token_id}")
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )
