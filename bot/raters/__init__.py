"""Raters: how far each member's votes can be trusted (control sets, agreement), as weights."""
