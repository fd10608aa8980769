"""The tokenizer of all-MiniLM-L6-v2 (BERT's uncased WordPiece), in plain Python.

It does what the model's ``tokenizer.json`` tells Hugging Face ``tokenizers`` (which fastembed
runs inside RobustMQ) to do; that package is not a dependency because it brings
``huggingface_hub`` (a model downloader) and some 30 MB. The vocabulary ships beside this
module; tests/langchain/semantic/test_semantic.py checks the ids against ones ``tokenizers``
produced.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from pathlib import Path

VOCAB_FILE = Path(__file__).with_name("vocab.txt")
CLS, SEP, UNK = "[CLS]", "[SEP]", "[UNK]"
MAX_TOKENS = 512  # fastembed truncates at the model's 512 positions, [CLS] and [SEP] included
MAX_WORD_CHARS = 100  # a longer word is one [UNK]
# The first prefix of a text read (``encode``): 512 tokens are rarely more characters
FIRST_PREFIX_CHARS = 4096

# CJK ideographs get spaces around them, so each is a word of its own (BERT's ranges)
_CJK = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


# Control, format, surrogate and private-use characters are dropped; unassigned ones (Cn) are
# kept, as tokenizers keeps them, and make their word [UNK].
_CONTROL = frozenset({"Cc", "Cf", "Cs", "Co"})


def _is_punctuation(char: str) -> bool:
    # ASCII symbols count as punctuation too ("$", "+", "^"), as in BERT
    return (char.isascii() and not char.isalnum() and char.isprintable() and char != " ") or (
        unicodedata.category(char).startswith("P")
    )


def _clean(text: str) -> str:
    """Drop U+FFFD and control characters (NUL included); every whitespace becomes a space;
    CJK ideographs are spaced out."""
    out = []
    for char in text:
        code = ord(char)
        if char in "\t\n\r":
            out.append(" ")
        elif code == 0xFFFD or unicodedata.category(char) in _CONTROL:
            continue  # other control characters go, even those Python calls whitespace
        elif char.isspace():
            out.append(" ")
        elif any(low <= code <= high for low, high in _CJK):
            out.append(f" {char} ")
        else:
            out.append(char)
    return "".join(out)


def _normalize(text: str) -> str:
    # accents are stripped before lowercasing, in the order tokenizers' BertNormalizer uses
    decomposed = unicodedata.normalize("NFD", _clean(text))
    # lowercased character by character (no Greek final sigma), as tokenizers does
    return "".join(c.lower() for c in decomposed if unicodedata.category(c) != "Mn")


def _words(text: str) -> list[str]:
    """Split at whitespace; each punctuation character is a word of its own."""
    words: list[str] = []
    for chunk in text.split():
        current = ""
        for char in chunk:
            if _is_punctuation(char):
                if current:
                    words.append(current)
                    current = ""
                words.append(char)
            else:
                current += char
        if current:
            words.append(current)
    return words


@lru_cache(maxsize=1)
def vocabulary() -> dict[str, int]:
    lines = VOCAB_FILE.read_text(encoding="utf-8").splitlines()
    return {token: i for i, token in enumerate(lines)}


def _pieces(word: str, vocab: dict[str, int]) -> list[int]:
    """The longest vocabulary pieces first, later ones prefixed ``##``; no cut: [UNK]."""
    if len(word) > MAX_WORD_CHARS:
        return [vocab[UNK]]
    ids, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                ids.append(vocab[piece])
                break
            end -= 1
        else:
            return [vocab[UNK]]
        start = end
    return ids


def encode(text: str) -> list[int]:
    """The token ids the model reads for ``text``: [CLS], the pieces (cut to fit), [SEP].

    Only as much of ``text`` is read as the cut needs: a prefix, twice as long each time,
    until its whole words hold more pieces than fit (the text whole when they never do), so a
    long text costs what its first 512 tokens cost."""
    vocab = vocabulary()
    room = MAX_TOKENS - 2
    size = FIRST_PREFIX_CHARS
    while True:
        whole = size >= len(text)
        words = _words(_normalize(text[:size]))
        if not whole:  # the prefix may end inside a word: only the words before it count
            words = words[:-1]
        ids = _ids(words, vocab, room)
        if whole or len(ids) >= room:
            return [vocab[CLS], *ids[:room], vocab[SEP]]
        size *= 2


def _ids(words: list[str], vocab: dict[str, int], room: int) -> list[int]:
    """The pieces of ``words`` in order, stopping once they fill ``room``."""
    ids: list[int] = []
    for word in words:
        ids += _pieces(word, vocab)
        if len(ids) >= room:
            break
    return ids
