"""A member's pick: the rules of what may be asked for and picked, recording it, which set
to rate next (``queue``), and what a member can read about themselves (``mine``)."""
