"""Control sets: sets with a known answer, which tell careful raters from random clickers.

A share of /imagine requests (``controls.share``) of members who rate others' sets become
control sets, never announced: the worker makes one image visibly worse on purpose
(:mod:`bot.controls.corrupt`). Admins may also mark any finished set with a known worse
and/or best image (:mod:`bot.controls.marking`). Every vote on a control set is scored in
one place, :mod:`bot.controls.scoring`.
"""
