"""The `prefloop` command as users run it, in subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from bot.db import migrate
from tests.support.cli import cli_env, prefloop
from training.data import read_preferences

ROOT = Path(__file__).resolve().parents[2]


def test_bad_settings_are_refused_with_their_name(tmp_path: Path) -> None:
    env = cli_env(generator__images_per_prompt="7", database_url="mysql://x")
    result = prefloop("config", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "PREFLOOP_GENERATOR__IMAGES_PER_PROMPT" in result.stderr
    assert "less than or equal to 4" in result.stderr
    assert "PREFLOOP_DATABASE_URL: Value error, must be a postgresql:// URL" in result.stderr


def test_the_discord_token_is_never_printed(tmp_path: Path) -> None:
    result = prefloop("config", env=cli_env(discord__token="sekrit-token"), cwd=tmp_path)
    assert result.returncode == 0
    assert "sekrit-token" not in result.stdout + result.stderr
    assert json.loads(result.stdout)["discord"]["token"] == "**********"


def test_passwords_in_urls_are_never_printed(tmp_path: Path) -> None:
    env = cli_env(
        database_url="postgresql://prefloop:db-pass-123@db.example.org:5432/prefloop",
        discord__proxy="http://proxyuser:proxy-pass-456@proxy.example.org:3128",
        storage__s3_endpoint_url="https://minio.example.org/?token=tok-789&region=x",
    )
    result = prefloop("config", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for secret in ("db-pass-123", "proxy-pass-456", "tok-789"):
        assert secret not in result.stdout + result.stderr
    shown = json.loads(result.stdout)
    assert shown["database_url"] == "postgresql://prefloop:**********@db.example.org:5432/prefloop"
    assert shown["discord"]["proxy"] == "http://proxyuser:**********@proxy.example.org:3128"
    assert (
        shown["storage"]["s3_endpoint_url"]
        == "https://minio.example.org/?token=**********&region=x"
    )


def test_urls_lose_their_password_wherever_it_is() -> None:
    from bot.config import mask_url

    masked = {
        "postgresql://u:p@ss@h/db": "postgresql://u:**********@h/db",  # '@' in the password
        "postgresql://u@h1:5432,h2:5432/db?password=x&sslmode=require": (
            "postgresql://u@h1:5432,h2:5432/db?password=**********&sslmode=require"
        ),
        "postgresql://u:p@[::1]:5432/db": "postgresql://u:**********@[::1]:5432/db",
        "http://proxy.example.org:3128": "http://proxy.example.org:3128",  # nothing to hide
        "postgresql://u:p@[::1/db": "**********",  # unreadable: shown not at all
    }
    assert {url: mask_url(url) for url in masked} == masked


@pytest.mark.slow
def test_run_imagine_pick_stats_stop(platform: Any, tmp_path: Path) -> None:
    """What `make run` starts, used from a second terminal, then stopped with Ctrl-C."""
    env = cli_env(
        database_url=platform.database_url,
        data_dir=str(tmp_path / "data"),
        generator__model=platform.settings.generator.model,
        generator__steps="3",
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "run", "--no-discord"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        made = prefloop("imagine", "a red cat", "-n", "3", "--user", "alice", "--wait", env=env)
        assert made.returncode == 0, made.stderr
        assert "generation 1 queued (position 1" in made.stdout
        paths = [
            line.split(": ", 1)[1].split()[0]
            for line in made.stdout.splitlines()
            if "image " in line
        ]
        assert len(paths) == 3 and all(Path(p).is_file() for p in paths)
        assert "step 3/3" in made.stderr

        picked = prefloop("pick", "1", "2", "--user", "alice", env=env)
        assert picked.returncode == 0 and "you picked image 2 of generation 1" in picked.stdout
        changed = prefloop("pick", "1", "3", "--user", "alice", env=env)
        assert "changed your pick for generation 1 from image 2 to image 3" in changed.stdout
        again = prefloop("pick", "1", "3", "--user", "alice", env=env)
        assert "image 3 was already your pick" in again.stdout
        other = prefloop("pick", "1", "1", "--user", "bob", env=env)
        assert "you picked image 1" in other.stdout
        huge = prefloop("pick", "1", "70000", env=env)
        assert huge.returncode == 1 and "no image 70000" in huge.stderr
        stale = prefloop("pick", "9", "1", env=env)
        assert stale.returncode == 1 and "no longer exists" in stale.stderr

        stats = json.loads(prefloop("stats", "--json", "--user", "alice", env=env).stdout)
        assert stats["picks"] == 2 and stats["requester_picks"] == 1 and stats["images"] == 3
        assert stats["repicks"] == 1
        assert stats["member_generations"] == 1

        exported = prefloop("export", str(tmp_path / "ds"), "--test-fraction", "0", env=env)
        assert exported.returncode == 0, exported.stderr
        assert "exported 1 picks (train 1, test 0) with 3 images" in exported.stdout
        (example,) = read_preferences(tmp_path / "ds")
        assert (example.prompt, example.chosen, len(example.images)) == ("a red cat", 2, 3)
        (tmp_path / "notes").mkdir()
        (tmp_path / "notes" / "todo.txt").write_text("keep me")
        refused = prefloop("export", str(tmp_path / "notes"), env=env)
        assert refused.returncode == 1 and "is not a prefloop export" in refused.stderr
        bad = prefloop("export", str(tmp_path / "x"), "--since", "last week", env=env)
        assert bad.returncode == 1 and "is not a date or time" in bad.stderr

        banned = prefloop("ban", "bob", "--reason", "spam", env=env)
        assert banned.returncode == 0 and "bob is banned" in banned.stdout
        assert "bob is no longer banned" in prefloop("unban", "bob", env=env).stdout
        forgot = prefloop("forget", "alice", "--yes", env=env)
        assert "forgot alice: 1 generations, 1 picks, 3 image files deleted" in forgot.stdout
    finally:
        server.send_signal(signal.SIGINT)
        _, log = server.communicate(timeout=60)
    assert server.returncode == 0, log
    assert "generation #1 done" in log


def test_refusals_exit_non_zero_with_the_message(platform: Any, tmp_path: Path) -> None:
    env = cli_env(database_url=platform.database_url, data_dir=str(tmp_path))
    result = prefloop("imagine", "   ", env=env)
    assert result.returncode == 1 and "Your prompt is empty" in result.stderr


@pytest.mark.parametrize("command", [["stats"], ["db", "current"], ["db", "upgrade"]])
def test_an_unreachable_database_is_one_clear_line(tmp_path: Path, command: list[str]) -> None:
    env = cli_env(database_url="postgresql://nobody@127.0.0.1:1/none", data_dir=str(tmp_path))
    result = prefloop(*command, env=env)
    assert result.returncode == 1
    assert "cannot reach the database" in result.stderr and "Traceback" not in result.stderr


def _embedded_flow(env: dict[str, str], run_as: list[str]) -> None:
    def cli(*args: str) -> Any:
        return subprocess.run(
            [*run_as, sys.executable, "-m", "bot.cli", *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )

    upgraded = cli("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"database at {migrate.head()} (head)" in upgraded.stdout
    queued = cli("imagine", "a cat", "-n", "2", "--user", "bob")
    assert "generation 1 queued" in queued.stdout, queued.stderr
    stats = json.loads(cli("stats", "--json").stdout)
    assert stats["generations"]["queued"] == 1 and stats["members"] == 1


def test_embedded_server_when_no_database_is_configured(tmp_path: Path) -> None:
    env = cli_env(data_dir=str(tmp_path / "data"))
    _embedded_flow(env, [])
    assert (tmp_path / "data" / "postgres" / "PG_VERSION").exists()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_embedded_server_as_a_normal_user() -> None:
    """As root, the server runs as a system user of its own; as anyone else, as them.

    The member's home is made straight under the system's temp folder: pytest's own
    (``pytest-of-root``) is private to root, so ``nobody`` could not reach a folder in it.
    """
    home = Path(tempfile.mkdtemp(prefix="prefloop-nobody-"))
    try:
        shutil.chown(home, "nobody")
        env = cli_env(data_dir=str(home / "data"))
        env["HOME"] = str(home)
        _embedded_flow(env, ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"])
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_run_without_a_discord_token_says_which_setting_to_set(tmp_path: Path) -> None:
    result = prefloop("run", env=cli_env(data_dir=str(tmp_path)), cwd=tmp_path)
    assert result.returncode == 2
    assert "PREFLOOP_DISCORD__TOKEN" in result.stderr and "--no-discord" in result.stderr
    assert not (tmp_path / "postgres").exists()  # refused before starting anything
