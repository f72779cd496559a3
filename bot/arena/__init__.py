"""The arena: members judge generator versions with their picks.

- mixed sets: while a comparison is open, a share of /imagine requests draw their images
  from two versions (the one serving when it began and a contender), shuffled;
- the leaderboard: every pick on a mixed set is a comparison between versions, rated by
  Bradley–Terry with bootstrap intervals;
- the people's gate: a retrain's candidate adapter is promoted only when its win rate
  against the serving version is above 50% by a sequential test that stays valid
  however often it is looked at.
"""
