"""Hugging Face tokenizers built on the spot, for tests without downloads."""

import json

PAD, EOS, BOS, UNK = 0, 1, 2, 3  # ids of word_tokenizer's special tokens


def word_tokenizer(words, with_bos, max_length=16):
    """A word-level fast tokenizer over ``words``: CLIP-like (start and end token, padding with
    ``<pad>``) or SigLIP-like (end token only, padding with the end token)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": PAD, "</s>": EOS, "<s>": BOS, "<unk>": UNK}
    for word in sorted(words):
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>" if with_bos else "$A </s>", special_tokens=[("<s>", BOS), ("</s>", EOS)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>" if with_bos else "</s>",
        model_max_length=max_length,
    )


def clip_tokenizer(folder):
    """transformers' ``CLIPTokenizer`` on OpenAI CLIP's byte-pair vocabulary, which open_clip ships
    (the released CLIP checkpoints' tokenizer, written to ``folder``). Needs open_clip."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    bpe = SimpleTokenizer()
    hf_names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {hf_names.get(token, token): index for token, index in bpe.encoder.items()}
    merges = sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.get)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    lines = ["#version: 0.2", *(" ".join(pair) for pair in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
