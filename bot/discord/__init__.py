"""The Discord front end: the only package that imports discord.

`client.PrefloopBot` runs the gateway connection; `commands` and `admin` hold the slash
commands, `buttons` the persistent buttons (all their state is in the custom_id and the
database), `delivery` posts progress and results, `render` writes what members read.
Everything a command does goes through `bot.service`.

Dependencies point one way: `client` (the composition root) imports `commands`, `admin`,
`buttons` and `delivery`; `delivery` and `commands` import `buttons`; all of them reach
the bot only through `protocol.Bot`, never `client`; `render` and `uploads` import
nothing of this package.
"""
