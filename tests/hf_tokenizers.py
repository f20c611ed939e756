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


def lvlm_tokenizer(words, special_tokens, added_tokens=(), with_bos=True):
    """A word-level fast tokenizer for an LVLM's processor: ``<pad>``, ``<eos>``, ``<bos>`` (the
    start of every sequence when ``with_bos``, as Llama's and Gemma's tokenizers; Qwen's has
    none), ``<unk>``, the soft-prompt placeholder ``<soft>`` and ``special_tokens``, a dict of the
    attributes the family's processor reads (``{"image_token": "<image>", ...}``, as the released
    tokenizers' configs name them), as special tokens; ``added_tokens`` (e.g. Idefics3's
    ``<row_1_col_1>``) kept whole too; then ``words``."""
    from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<soft>", *special_tokens.values(), *added_tokens]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(specials))}
    for word in sorted(words):
        vocab.setdefault(word.lower(), len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if with_bos:
        backend.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A $B:1", special_tokens=[("<bos>", vocab["<bos>"])]
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>" if with_bos else None,
        unk_token="<unk>",
        extra_special_tokens={"soft_token": "<soft>", **special_tokens},
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in added_tokens])
    return tokenizer
