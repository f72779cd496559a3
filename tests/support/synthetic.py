"""Synthetic collected data, written straight into the tables and the store (fast, bulk).

For the tests that need many picks (split invariants) and for bench/export.py. Every
image is a small valid PNG with unique bytes, stored under its content key like the
worker stores them; every generation is done and picked by the member who asked.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import psycopg

from bot.db.engine import libpq_url
from bot.storage import content_key


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _base_png() -> tuple[bytes, bytes]:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 120, 40)).save(buffer, "PNG")
    data = buffer.getvalue()
    return data[:33], data[33:]  # signature + IHDR, then IDAT + IEND


def unique_png(number: int, parts: tuple[bytes, bytes] | None = None) -> bytes:
    """A valid 8x8 PNG whose bytes differ for every ``number`` (a text chunk carries it)."""
    head, tail = parts or _base_png()
    return head + _chunk(b"tEXt", b"n\0" + str(number).encode()) + tail


def seed_picks(
    database_url: str,
    store: Path,
    *,
    picks: int,
    prompts: Sequence[str] | None = None,
    members: int = 50,
    images: int = 4,
    start: int = 0,
) -> list[int]:
    """Create ``picks`` done generations, each picked by its requester; return their ids.

    Prompts cycle through ``prompts`` (default: a distinct one per generation); the
    chosen image cycles through the indexes. ``start`` keeps numbers unique across calls.
    """
    parts = _base_png()
    members_ids = [f"{900_000_000_000 + m}" for m in range(members)]
    with psycopg.connect(libpq_url(database_url)) as conn:
        user_ids = []
        for external in members_ids:
            row = conn.execute(
                "INSERT INTO users (frontend, external_id) VALUES ('discord', %s) "
                "ON CONFLICT (frontend, external_id) DO UPDATE SET banned = users.banned "
                "RETURNING id",
                (external,),
            ).fetchone()
            assert row is not None
            user_ids.append(row[0])
        first = conn.execute(
            "SELECT nextval(pg_get_serial_sequence('generations', 'id'))"
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "SELECT setval(pg_get_serial_sequence('generations', 'id'), %s)", (first + picks,)
        )
        ids = list(range(first, first + picks))
        with conn.cursor() as cursor:
            with cursor.copy(
                "COPY generations (id, prompt, n_images, params, generator_version, status, "
                "requested_by, requested_at, started_at, finished_at) FROM STDIN"
            ) as copy:
                for n, gid in enumerate(ids):
                    prompt = prompts[n % len(prompts)] if prompts else f"prompt {start + n}"
                    copy.write_row(
                        (
                            gid,
                            prompt,
                            images,
                            '{"steps": 1}',
                            "synthetic",
                            "done",
                            user_ids[n % members],
                            "now",
                            "now",
                            "now",
                        )
                    )
            with cursor.copy(
                "COPY images (generation_id, index, storage_key, sha256, seed, width, height) "
                "FROM STDIN"
            ) as copy:
                for n, gid in enumerate(ids):
                    for k in range(images):
                        data = unique_png((start + n) * 4 + k, parts)
                        key, digest = content_key(data, "png")
                        path = store / key
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_bytes(data)
                        copy.write_row((gid, k, key, digest, k, 8, 8))
            with cursor.copy(
                "COPY choices (generation_id, user_id, image_index) FROM STDIN"
            ) as copy:
                for n, gid in enumerate(ids):
                    copy.write_row((gid, user_ids[n % members], (start + n) % images))
    return ids


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
