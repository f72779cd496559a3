"""A member's pick: the rules of what may be asked for and picked, and recording it."""
