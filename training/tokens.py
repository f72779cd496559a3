"""CLIP's byte-pair tokenizer, built offline from the vocabulary shipped in ``assets/``.

Stable Diffusion 1.x/2.x read prompts through this tokenizer with a 77-token context
(75 for the prompt plus start and end), and open_clip's shipped ``bpe_simple_vocab_16e6``
file is the same vocabulary (MIT, OpenAI). The ``tokenizers`` library does the work, so
counting a prompt's tokens needs no torch and takes microseconds.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

VOCAB_FILE = Path(__file__).with_name("assets") / "clip_bpe_16e6.txt.gz"
CONTEXT_LENGTH = 77  # tokens CLIP's text encoder reads, start and end included
FULL_MERGES = 49152 - 256 - 2  # merges in CLIP's vocabulary of 49,408 tokens
START, END = "<|startoftext|>", "<|endoftext|>"
# CLIP's pre-tokenisation pattern (contractions, letters, single digits, other symbols).
_WORDS = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes), strict=True))


@lru_cache(maxsize=4)
def clip_merges(n_merges: int = FULL_MERGES) -> tuple[tuple[str, str], ...]:
    """The first ``n_merges`` BPE merges of CLIP's vocabulary, in rank order."""
    with gzip.open(VOCAB_FILE, "rt", encoding="utf-8") as lines:
        next(lines)  # "#version" header
        merges: list[tuple[str, str]] = []
        for line in lines:
            if len(merges) == n_merges:
                break
            left, right = line.split()
            merges.append((left, right))
    return tuple(merges)


def clip_vocabulary(n_merges: int = FULL_MERGES) -> dict[str, int]:
    """Token -> id, laid out exactly as CLIP lays it out (bytes, bytes+</w>, merges, specials)."""
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars]
    tokens += ["".join(merge) for merge in clip_merges(n_merges)] + [START, END]
    return {token: index for index, token in enumerate(tokens)}


def build_clip_tokenizer(n_merges: int = FULL_MERGES) -> Tokenizer:
    """A CLIP tokenizer that adds start/end tokens; ``n_merges`` trims the vocabulary."""
    vocab = clip_vocabulary(n_merges)
    bpe = models.BPE(
        vocab=vocab,
        merges=list(clip_merges(n_merges)),
        continuing_subword_prefix="",
        end_of_word_suffix="</w>",
        unk_token=END,
        fuse_unk=False,
    )
    tokenizer = Tokenizer(bpe)
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_WORDS), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{START} $A {END}",
        special_tokens=[(START, vocab[START]), (END, vocab[END])],
    )
    return tokenizer


@dataclass(frozen=True)
class PromptFit:
    """How a prompt fits CLIP's context: its token count and the text CLIP would drop."""

    tokens: int
    kept: str
    cut: str

    @property
    def fits(self) -> bool:
        return not self.cut


@lru_cache(maxsize=1)
def _full_tokenizer() -> Tokenizer:
    return build_clip_tokenizer()


def fit_prompt(prompt: str, max_tokens: int = CONTEXT_LENGTH - 2) -> PromptFit:
    """Count ``prompt``'s CLIP tokens and split it where CLIP would stop reading."""
    encoding = _full_tokenizer().encode(prompt, add_special_tokens=False)
    if len(encoding.ids) <= max_tokens:
        return PromptFit(len(encoding.ids), prompt, "")
    cut_at = encoding.offsets[max_tokens][0]
    return PromptFit(len(encoding.ids), prompt[:cut_at].rstrip(), prompt[cut_at:].strip())
