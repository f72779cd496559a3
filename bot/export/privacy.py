"""What keeps people out of an export: keyed user hashes, and the prompts that name people.

``user_hash`` is HMAC-SHA256 of the member's front-end id under a secret key, so the same
member has the same hash in every export made with that key, and nobody without the key
can test a guessed Discord id against it. The key comes from the settings
(``PREFLOOP_EXPORT__USER_HASH_SECRET``) or is created on first use in the data folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import tempfile
import unicodedata
from importlib import resources
from pathlib import Path

SECRET_FILE = "user_hash.key"


def normalise(text: str) -> str:
    """Case-, accent-width- and punctuation-insensitive form of a prompt or a name.

    NFKC, case-folded, every run of non-word characters turned into one space.
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.split(r"[\W_]+", folded)).strip()


# Discord writes mentions of members, roles and channels into message text as their ids.
MENTION = re.compile(r"<(@!?|@&|#)(\d+)>")
MENTION_WORD = {"@": "@member", "@!": "@member", "@&": "@role", "#": "#channel"}


def scrub_mentions(prompt: str) -> str:
    """The prompt with Discord mentions (``<@1234>``, ``<@&…>``, ``<#…>``) made anonymous."""
    if "<" not in prompt:
        return prompt
    return MENTION.sub(lambda m: MENTION_WORD[m.group(1)], prompt)


def load_secret(data_dir: Path, configured: str | None, filename: str = SECRET_FILE) -> bytes:
    """The hash key: the configured one, else the one kept in ``data_dir`` (made once).

    ``filename`` names the file of another key kept the same way (the web's session key).

    A new key is written to a temporary file and linked into place, so the key file
    appears whole or not at all, and processes creating it at once agree on one key.
    """
    if configured:
        return configured.encode()
    path = Path(data_dir) / filename
    if path.exists():
        return _read_key(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{filename}.")
    try:
        with os.fdopen(fd, "wb") as file:  # mkstemp's mode is 0600
            file.write(secrets.token_hex(32).encode() + b"\n")
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        os.unlink(tmp)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    key = path.read_bytes().strip()
    if not key:
        raise ValueError(f"{path} is empty: delete it (a new key is made) or restore it")
    return key


class UserHasher:
    """``user_hash`` for a member: 32 hex digits of HMAC-SHA256(key, "frontend:id")."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("the user hash key is empty")
        self._key = key
        self._cache: dict[tuple[str, str], str] = {}

    def __call__(self, frontend: str, external_id: str) -> str:
        found = self._cache.get((frontend, external_id))
        if found is None:
            message = f"{frontend}:{external_id}".encode()
            found = hmac.new(self._key, message, hashlib.sha256).hexdigest()[:32]
            if len(self._cache) < 1_000_000:  # members, not picks: stays small
                self._cache[(frontend, external_id)] = found
        return found


class IdHasher:
    """Published ids of picks and generations: 32 hex digits of HMAC-SHA256(key, "kind\\0n").

    Discord shows generation ids to the whole channel (attachment names like ``12_1.png``,
    button custom_ids) next to "for @requester"; an export that published them would let
    anyone there tie a ``user_hash`` to a member. These keyed ids are just as stable (the
    same key gives the same id in every export), but mean nothing without the key. The
    message holds a NUL, which ``"frontend:id"`` never does: no id equals a user hash.
    """

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("the id key is empty")
        self._key = key

    def pick(self, pick_id: int) -> str:
        """An instance's id (one pick)."""
        return self._hash("pick", pick_id)

    def generation(self, generation_id: int) -> str:
        """A generation's id (one prompt's batch of images, shared by its picks)."""
        return self._hash("generation", generation_id)

    def _hash(self, kind: str, number: int) -> str:
        message = f"{kind}\0{number}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:32]


class NameMatcher:
    """Does a prompt name a person from a list? (``contain_name`` in the HPS layout).

    A name matches when its normalised words appear as consecutive whole words of the
    normalised prompt: "Greg Rutkowski" matches "by greg-rutkowski," but not
    "gregory". A list cannot know every person, misspellings, or names that are also
    ordinary words; see docs/dataset-format.md.
    """

    def __init__(self, names: list[str]) -> None:
        self.names = {n for n in (normalise(name) for name in names) if n}
        self.longest = max((n.count(" ") + 1 for n in self.names), default=0)

    @classmethod
    def from_file(cls, path: Path | None) -> NameMatcher:
        """Names from ``path`` (one per line, # comments), or the built-in list."""
        if path is None:
            text = resources.files(__package__).joinpath("person_names.txt").read_text("utf-8")
        else:
            text = Path(path).read_text("utf-8")
        return cls([line.split("#", 1)[0] for line in text.splitlines()])

    def __call__(self, prompt: str, *, normalised: bool = False) -> bool:
        words = (prompt if normalised else normalise(prompt)).split()
        for size in range(1, self.longest + 1):
            for start in range(len(words) - size + 1):
                if " ".join(words[start : start + size]) in self.names:
                    return True
        return False
