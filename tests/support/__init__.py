"""What tests and benches share; fixtures stay in the conftest.py files.

- ``fake_discord``: a Discord server on loopback that the real discord.py client talks to;
  ``discord_bot``: the real bot and worker driven against it (members, /imagine, answers).
- ``database``, ``settings``, ``cli``, ``aio``, ``s3``, ``processes``: a fresh database and
  what tests read from it, test settings, the `prefloop` command in a subprocess, waiting
  on async checks, a local S3 server, the processes a test started.
- ``synthetic``: picks written straight into the tables; ``colours`` and ``red_corner``:
  rules standing in for HPS (a colour dataset, a red top-left corner), so learning shows.
- ``adapters``: a small LoRA adapter; ``retrain`` and ``scripted_trainer``: a trainer that
  reports the figures a test asks for; ``slow_device``: a generator that takes its time;
  ``startup_probe``: the bot in a fresh process (``python -m tests.support.startup_probe``).
"""
